"""The benchmark suite: the vault against the database's own speed, side by side.

Run it with ``python -m benchmarks.run`` (see ``--help``); ``BENCHMARKS.md`` holds the
latest real run. Modules, one job each:

- :mod:`benchmarks.workload`: the payload every case writes, seeding, and the timed loop;
- :mod:`benchmarks.pgbench`: the limit, the vault's own SQL text run by ``pgbench``;
- :mod:`benchmarks.usual`: the usual way, SQLAlchemy's async ORM, select then update;
- :mod:`benchmarks.sqlite_direct`: Python's ``sqlite3`` running the vault's statement;
- :mod:`benchmarks.memory`: a child process that counts its RSS while it upserts;
- :mod:`benchmarks.report`: targets, the table, the machine, ``BENCHMARKS.md``;
- :mod:`benchmarks.run`: the command line that runs all of it in one go.
"""
