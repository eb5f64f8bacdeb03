"""Commands and local tools: the `operator-service` command, the launcher of `make run`,
the embedded Postgres, the demo.
"""
