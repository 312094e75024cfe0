"""A loopback Calpendo web-API simulator for demos, tests and benchmarks.

    from calpendo_sim import CalpendoSimulator
    with CalpendoSimulator(bookings=60, seed=42) as sim:
        requests.get(f"{sim.url}/webdav/q/Calpendo.Booking/status/EQ/APPROVED",
                     auth=("calpendo", "calpendo"))
"""

from .seed import generate_bookings
from .server import CalpendoSimulator

__all__ = ["CalpendoSimulator", "generate_bookings"]
