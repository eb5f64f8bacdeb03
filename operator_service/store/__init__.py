"""The data layer: the connection pool, the schema and every SQL statement."""
