"""The FineTune pipeline's Validate step: checks an execution input and its dataset before a job starts.

Layout: ``settings`` (environment contract, stdlib + pydantic, imported by the CDK stack), ``request`` (the
input schema and the checks that need no AWS, shared with the ``finetune`` command-line tool), ``dataset``
(the S3 checks, with an injected client) and ``handler`` (the thin Lambda entry point).
"""
