"""A loopback REDCap API simulator (one project, one token) for demos and tests.

    from calpendo_sim.redcap import RedcapSimulator
    with RedcapSimulator(records=20, visits=30, seed=7) as sim:
        requests.post(sim.url, data={"token": DEMO_TOKEN, "content": "record",
                                     "format": "json", "type": "flat"})
"""

from .project import Project
from .seed import generate_rows
from .server import DEMO_TOKEN, ApiRequest, RedcapSimulator
from .store import RowKey

__all__ = ["DEMO_TOKEN", "ApiRequest", "Project", "RedcapSimulator", "RowKey", "generate_rows"]
