"""Reference data of the simulated site: resources, projects and people.

A ``Directory`` hands out the referenced objects (``resource``, ``project``, ``booker``,
``Operator``...) by name with stable ids, so the seed data and bookings added by tests
share one set of objects, and unknown names become new objects as a real site would have.
"""

from __future__ import annotations

import threading

from .schema import BASE_TYPE

# name -> biskit type of the bookings made on it (what the booking form creates).
RESOURCES = {
    "3T MRI": "MRIScan",
    "EEG Lab": "EEGBooking",
    "Mock Scanner": BASE_TYPE,
}

PROJECTS = {
    "BRISKP": "Brain network models in stroke patients",
    "ADNI4": "Alzheimer's Disease Neuroimaging Initiative 4",
    "PEDSLEEP": "Sleep and memory consolidation in children",
    "MSRELAPSE": "MRI markers of relapse in multiple sclerosis",
    "QA": "Scanner quality assurance",
}

OPERATORS = ("Tech, Anna", "Nguyen, Minh", "Okafor, Chidi", "Lindqvist, Sara")
RESEARCHERS = ("Dr. Priya Raman", "Dr. Tom Becker", "Dr. Aiko Tanaka", "Dr. Luis Ortega",
               "Front Desk")


class Directory:
    """Referenced objects by name; ids are stable for the lifetime of one directory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: dict[tuple[str, str], int] = {}
        self._next_id = 1
        for name in RESOURCES:
            self._id("resource", name)
        for name in PROJECTS:
            self._id("project", name)
        for name in (*OPERATORS, *RESEARCHERS):
            self._id("person", name)

    def _id(self, kind: str, name: str) -> int:
        with self._lock:
            key = (kind, name)
            if key not in self._ids:
                self._ids[key] = self._next_id
                self._next_id += 1
            return self._ids[key]

    def resource(self, name: str) -> dict:
        return {"id": self._id("resource", name), "name": name, "formattedName": name}

    def project(self, name: str | None) -> dict | None:
        if name is None:
            return None
        title = PROJECTS.get(name)
        return {"id": self._id("project", name), "name": name,
                "formattedName": f"{name} ({title})" if title else name}

    def person(self, name: str) -> dict:
        return {"id": self._id("person", name), "name": name}

    def operator(self, name: str | None) -> dict | None:
        if name is None:
            return None
        return {**self.person(name), "formattedName": name}


def default_type(resource: str) -> str:
    """The biskit type a booking on ``resource`` gets unless told otherwise."""
    return RESOURCES.get(resource, BASE_TYPE)
