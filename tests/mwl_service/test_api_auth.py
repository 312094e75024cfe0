"""mwl-api accounts and tokens over a real uvicorn: login, 401/403, roles, revocation,
the login rate limit, and the `calpendo-mwl user` commands."""

from __future__ import annotations

import datetime as dt
import io

import pytest
import requests

from calpendo_assets import cli
from mwl_service import users
from mwl_service.engine import make_engine
from tests.fixtures.api import PASSWORD, api_user

pytestmark = pytest.mark.postgres

PROTECTED = [
    ("GET", "/api/v1/worklist"), ("GET", "/api/v1/worklist/1234"),
    ("GET", "/api/v1/worklist/1234/history"), ("POST", "/api/v1/worklist"),
    ("PATCH", "/api/v1/worklist/1234"), ("DELETE", "/api/v1/worklist/1234"),
    ("GET", "/api/v1/mpps"), ("GET", "/api/v1/excluded"), ("GET", "/api/v1/me"),
    ("GET", "/api/v1/users"), ("POST", "/api/v1/logout"),
]


@pytest.fixture
def api(db_url, api_server):
    server = api_server(db_url)
    for name, role in (("reader", "read"), ("writer", "write"), ("boss", "admin")):
        api_user(server.engine, name, role)
    return server


def test_login_answers_a_bearer_token(api):
    answer = requests.post(f"{api.url}/api/v1/login",
                           json={"username": "reader", "password": PASSWORD}, timeout=30)
    assert answer.status_code == 200
    body = answer.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 8 * 3600
    assert len(body["access_token"]) >= 40
    me = api.call("GET", "/api/v1/me",
                  headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.json() == {"username": "reader", "role": "read"}


def test_a_wrong_password_and_an_unknown_user_get_the_same_401(api):
    wrong = requests.post(f"{api.url}/api/v1/login",
                          json={"username": "reader", "password": "not it at all"}, timeout=30)
    unknown = requests.post(f"{api.url}/api/v1/login",
                            json={"username": "nobody", "password": PASSWORD}, timeout=30)
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"detail": "wrong user name or password"}
    assert wrong.headers["WWW-Authenticate"] == "Bearer"


def test_every_endpoint_but_health_needs_a_valid_token(api):
    for method, path in PROTECTED:
        none = api.call(method, path, json={})
        bad = api.call(method, path, json={}, headers={"Authorization": "Bearer not-a-token"})
        basic = api.call(method, path, json={}, headers={"Authorization": "Basic cmVhZGVyOng="})
        assert none.status_code == bad.status_code == basic.status_code == 401, path
        assert none.json()["detail"] == "a valid bearer token is required"
        assert "not valid" in bad.json()["detail"]
    assert api.call("GET", "/api/v1/health").status_code == 200


def test_a_read_user_writing_gets_403(api):
    for method, path in (("POST", "/api/v1/worklist"), ("PATCH", "/api/v1/worklist/1234"),
                         ("DELETE", "/api/v1/worklist/1234")):
        answer = api.call(method, path, user="reader", json={"patient_id": "X"})
        assert answer.status_code == 403, path
        assert answer.json()["detail"] == "this needs the 'write' role; 'reader' has 'read'"


def test_passwords_are_stored_as_argon2id_hashes_only(api):
    with api.engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT password_hash FROM api_users").scalars().all()
    assert len(stored) == 3 and all(h.startswith("$argon2id$") for h in stored)
    assert PASSWORD not in " ".join(stored)


def test_only_admins_list_accounts(api):
    assert api.call("GET", "/api/v1/users", user="writer").status_code == 403
    answer = api.call("GET", "/api/v1/users", user="boss")
    assert answer.status_code == 200
    listed = {u["username"]: u for u in answer.json()["items"]}
    assert listed["boss"] == {"username": "boss", "role": "admin", "disabled": False, "tokens": 1}
    assert set(listed) == {"boss", "reader", "writer"}
    assert "password_hash" not in str(answer.json())


def test_disabling_a_user_revokes_its_tokens_at_once(api):
    assert api.call("GET", "/api/v1/worklist", user="writer").status_code == 200
    users.disable_user(api.engine, "writer")
    assert api.call("GET", "/api/v1/worklist", user="writer").status_code == 401
    again = requests.post(f"{api.url}/api/v1/login",
                          json={"username": "writer", "password": PASSWORD}, timeout=30)
    assert again.status_code == 401


def test_a_new_password_revokes_tokens_and_the_old_password(api):
    assert api.call("GET", "/api/v1/me", user="reader").status_code == 200
    users.set_password(api.engine, "reader", "a brand new secret")
    assert api.call("GET", "/api/v1/me", user="reader").status_code == 401
    old = requests.post(f"{api.url}/api/v1/login",
                        json={"username": "reader", "password": PASSWORD}, timeout=30)
    new = requests.post(f"{api.url}/api/v1/login",
                        json={"username": "reader", "password": "a brand new secret"}, timeout=30)
    assert (old.status_code, new.status_code) == (401, 200)


def test_logout_revokes_the_token(api):
    token = api.token("reader")
    assert api.call("POST", "/api/v1/logout", user="reader").status_code == 204
    answer = api.call("GET", "/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 401


def test_an_expired_token_is_refused(db_url, api_server):
    server = api_server(db_url, token_ttl=dt.timedelta(seconds=1))
    api_user(server.engine, "shortlived", "read")
    token = server.token("shortlived")
    assert server.call("GET", "/api/v1/me", user="shortlived").status_code == 200
    deadline = dt.datetime.now() + dt.timedelta(seconds=5)
    while server.call("GET", "/api/v1/me", user="shortlived").status_code == 200:
        assert dt.datetime.now() < deadline, f"token {token[:4]}... still accepted"


def test_refused_logins_are_rate_limited_per_address_in_the_database(db_url, api_server):
    first = api_server(db_url, max_login_failures=3)
    api_user(first.engine, "target", "read")
    for _ in range(3):
        answer = requests.post(f"{first.url}/api/v1/login",
                               json={"username": "target", "password": "guess"}, timeout=30)
        assert answer.status_code == 401
    # A second replica on the same database refuses too: the count is in the database.
    second = api_server(db_url, max_login_failures=3)
    for server in (first, second):
        answer = requests.post(f"{server.url}/api/v1/login",
                               json={"username": "target", "password": PASSWORD}, timeout=30)
        assert answer.status_code == 429
        assert 1 <= int(answer.headers["Retry-After"]) <= 300


def test_the_user_commands_manage_accounts(db_url, capsys):
    def run(*argv: str, stdin: str = "") -> int:
        args = cli.build_parser().parse_args([*argv, "--db-url", db_url])
        if "password_stdin" in args and args.password_stdin:
            return args.run(args, stdin=io.StringIO(stdin))
        return args.run(args)

    assert run("user", "add", "tech1", "--role", "write", "--password-stdin",
               stdin="long enough pw\n") == 0
    assert run("user", "add", "tech1", "--role", "read", "--password-stdin",
               stdin="long enough pw\n") == 1
    assert run("user", "add", "tech2", "--role", "read", "--password-stdin",
               stdin="short\n") == 1
    assert run("user", "add", "tech3", "--role", "read") == 2  # no password from an argument
    assert run("user", "passwd", "tech1", "--password-stdin", stdin="another good one\n") == 0
    assert run("user", "disable", "tech1") == 0
    assert run("user", "disable", "ghost") == 1
    assert run("user", "list") == 0
    out, err = capsys.readouterr()
    assert "tech1                    write  disabled  0" in out
    assert "exists already" in err and "at least 8 characters" in err and "no user 'ghost'" in err
    assert "long enough pw" not in out + err and "another good one" not in out + err
    engine = make_engine(db_url)
    with engine.connect() as conn:
        assert users.authenticate(conn, "tech1", "another good one") is None  # disabled
    engine.dispose()
