"""The only door to Kubernetes: WorkFlow custom resources and the pods of their stages.
"""
