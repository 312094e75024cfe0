"""MR fields end to end: custom Calpendo properties -> sync -> mwl-service -> DCMTK findscu.

Weight in pounds and height in centimetres (config.units), protocol and procedure
codes by project (one with a Coding Scheme Version), a referenced prior study, a
template-built Patient Comments, and a booking without any of it that must come back
with empty values, never invented ones.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from calpendo_assets import sync
from calpendo_assets.config import load_config
from mwl_service.engine import make_engine
from tests.fixtures.dicom import run_findscu
from tests.fixtures.sim import SIM_PASSWORD, SIM_USER

pytestmark = pytest.mark.external

CREDENTIALS = {"CALPENDO_USERNAME": SIM_USER, "CALPENDO_PASSWORD": SIM_PASSWORD}


CUSTOM = ["Weight", "Height", "SafetyNotes", "Allergy", "Pregnant", "Priority", "PriorStudy"]
PRIOR = ("1.2.840.10008.3.1.2.3.1", "1.2.826.0.1.3680043.8.498.5")


def _config(url: str) -> dict:
    return {
        "data_sources": [{
            "name": "mri",
            "type": "calpendo",
            "config": {
                "base_url": url,
                "resources": ["3T MRI"],
                "status_filter": ["APPROVED"],
                "resource_ae_title_mapping": {"3T MRI": ["MRI3T", "MRI3TB"]},
                "resource_modality_mapping": {"3T MRI": "MR"},
                "units": {"patient_weight": "lb", "patient_size": "cm"},
                "scheduled_protocol_codes": {
                    "BRISK": {"code_value": "BRAIN01", "coding_scheme_designator": "99SITE",
                              "code_meaning": "Brain research protocol"},
                },
                "requested_procedure_codes": {
                    "BRISKP": {"code_value": "MRBRAIN", "coding_scheme_designator": "99SITE",
                               "coding_scheme_version": "2024", "code_meaning": "MR brain"},
                },
            },
            "field_mapping": {
                "title": {"_extract": {"patient_id": {"pattern": "^(\\S+)", "group": 1}}},
                "project.name": "study_description",
                "Weight": "patient_weight",
                "Height": "patient_size",
                "SafetyNotes": "medical_alerts",
                "Allergy": "allergies",
                "Pregnant": "pregnancy_status",
                "Priority": "requested_procedure_priority",
                "PriorStudy": "referenced_studies",
                "_templates": {
                    "patient_comments": "Project:{project.name} Subject:{patient_id} Session:{id}"
                },
            },
        }]
    }


# Site custom properties live on Calpendo.Booking itself, or (the vendor's usual
# shape) on a site subtype such as MRIScan, which the base type's query cannot select.
@pytest.mark.parametrize("subtype", ["Calpendo.Booking", "MRIScan"])
def test_mr_fields_reach_findscu_with_units_codes_and_templates(
    calpendo_sim_factory, tmp_path, mwl_service_process, subtype
):
    sim = calpendo_sim_factory(bookings=0)
    start = dt.datetime.combine(sim.today, dt.time(10))
    base = {"biskit_type": subtype}
    full = sim.add_booking(
        "SUB0301", start=start, project="BRISKP", **base,
        Weight="165", Height="172.5", SafetyNotes="Pacemaker checked", Allergy="Latex",
        Pregnant="no", Priority="high", PriorStudy=", ".join(PRIOR),
    )
    bare = sim.add_booking("SUB0302", start=start + dt.timedelta(hours=2), project="OTHER", **base)
    config = _config(sim.url)
    if subtype != "Calpendo.Booking":
        config["data_sources"][0]["config"]["subtype_properties"] = {subtype: CUSTOM}
    path = tmp_path / "calpendo.json"
    path.write_text(json.dumps(config))
    (source,) = load_config(str(path), env={})
    url = f"sqlite:///{tmp_path / 'worklist.db'}"
    engine = make_engine(url)
    _, result, published = sync.run_sync(source, engine, env=CREDENTIALS)
    engine.dispose()
    assert published.inserted == 2, result.warnings

    service = mwl_service_process(url)
    keys = [
        "PatientID", "PatientWeight", "PatientSize", "MedicalAlerts", "Allergies",
        "PregnancyStatus", "PatientComments", "RequestedProcedurePriority",
        "RequestedProcedureCodeSequence", "AccessionNumber",
        f"(0040,0100)[0].ScheduledProcedureStepStartDate={sim.today:%Y%m%d}",
        "(0040,0100)[0].ScheduledStationAETitle=MRI3TB",
        "(0040,0100)[0].ScheduledProtocolCodeSequence",
        "ReferencedStudySequence", "TimezoneOffsetFromUTC",
    ]
    answers = {a.PatientID: a for a in run_findscu(service.host, service.port, service.ae_title, keys)}
    assert set(answers) == {"SUB0301", "SUB0302"}

    a = answers["SUB0301"]
    assert str(a.PatientWeight) == "74.8"  # 165 lb, to 0.1 kg
    assert str(a.PatientSize) == "1.73"  # 172.5 cm, to 0.01 m (half up)
    assert (a.MedicalAlerts, a.Allergies) == ("Pacemaker checked", "Latex")
    assert a.PregnancyStatus == 1
    assert a.RequestedProcedurePriority == "HIGH"
    assert a["RequestedProcedurePriority"].VR == "SH"  # the dictionary's VR, as sent
    assert a.PatientComments == f"Project:BRISKP Subject:SUB0301 Session:{full}"
    (procedure,) = a.RequestedProcedureCodeSequence
    assert (procedure.CodeValue, procedure.CodingSchemeDesignator, procedure.CodeMeaning) == (
        "MRBRAIN", "99SITE", "MR brain")
    assert procedure.CodingSchemeVersion == "2024"
    (prior,) = a.ReferencedStudySequence
    assert (prior.ReferencedSOPClassUID, prior.ReferencedSOPInstanceUID) == PRIOR
    offset = dt.datetime.combine(sim.today, dt.time(10), source.tz).strftime("%z")
    assert a.TimezoneOffsetFromUTC == offset
    sps = a.ScheduledProcedureStepSequence[0]
    # A resource with two consoles: a query for either title finds the step.
    assert list(sps.ScheduledStationAETitle) == ["MRI3T", "MRI3TB"]
    (protocol,) = sps.ScheduledProtocolCodeSequence  # "BRISK" is a prefix of "BRISKP"
    assert (protocol.CodeValue, protocol.CodeMeaning) == ("BRAIN01", "Brain research protocol")

    b = answers["SUB0302"]
    for keyword in ("PatientWeight", "PatientSize", "MedicalAlerts", "Allergies",
                    "RequestedProcedurePriority"):
        assert b.get(keyword) in (None, ""), keyword
    assert b.get("PregnancyStatus") in (None, "")
    assert len(b.RequestedProcedureCodeSequence) == 0
    assert len(b.ReferencedStudySequence) == 0
    assert len(b.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence) == 0
    assert b.PatientComments == f"Project:OTHER Subject:SUB0302 Session:{bare}"
