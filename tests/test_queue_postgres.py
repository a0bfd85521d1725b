"""The PostgreSQL backend (queue_postgres.py) beyond the shared contract of test_queue_contract.py:
the test server itself, the URL rule, the driver error, wake-ups through LISTEN/NOTIFY, doctor."""

import pg_server


def test_the_test_server_gives_each_test_a_fresh_database(postgres_server, postgres_url):
    import psycopg

    other = postgres_server.new_database()
    assert other != postgres_url
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
    with psycopg.connect(other, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('t')").fetchone()[0] is None
        assert conn.execute("SHOW fsync").fetchone()[0] == "off"


def test_server_binaries_are_found_off_path():
    assert pg_server.find_bin("definitely-not-a-postgres-binary") is None
