"""mwl-service options that are refused at parse time, before anything starts."""

from __future__ import annotations

import pytest

from mwl_service import cli
from tests.fixtures.dicom import SERVER_AET, insert_item, mwl_query, pynetdicom_find


@pytest.mark.parametrize("days", ["36501", "1000000", "nan", "inf", "-1"])
def test_offer_past_days_out_of_range_is_refused_with_its_range(days, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(["--offer-past-days", days])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert f"argument --offer-past-days: must be 0 to 36500 days: '{days}'" in error


@pytest.mark.parametrize("days", ["0", "7", "36500"])
def test_offer_past_days_in_range_is_taken(days):
    assert cli.build_parser().parse_args(["--offer-past-days", days]).offer_past_days == float(days)


def test_the_largest_offer_past_days_still_answers_a_query_without_a_date(
    engine, db_url, mwl_server
):
    """What 1000000 broke (every C-FIND without a date failed with 0xC000) holds at the
    largest value the option accepts."""
    item = insert_item(engine)
    server = mwl_server(db_url, offer_past_days=cli.MAX_OFFER_PAST_DAYS)
    answers, status = pynetdicom_find(server.host, server.port, SERVER_AET,
                                      mwl_query(AccessionNumber=""))
    assert status == 0x0000
    assert [str(a.AccessionNumber) for a in answers] == [item["accession_number"]]
