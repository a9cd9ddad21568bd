"""The client: the sans-IO flow (flow), I/O (drivers), what they return (results), bulk jobs with
resume (bulk), their inputs (readers), vector files (vector_io).

Import names from the module that defines them; the public API is `qembed.Client` and friends.
"""
