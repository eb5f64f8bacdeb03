"""The domain: the workflow and status vocabulary, Provider signatures, the job lifecycle
(both stores or neither), results and readiness. No Flask here.
"""
