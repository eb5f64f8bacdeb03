"""The only door to Kubernetes: WorkFlow custom resources (workflows.py) and the calls that
create, read, annotate and delete them and read their pods' logs (client.py)."""
