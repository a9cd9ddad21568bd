"""The client: requests and replies (drivers), bulk jobs with resume (bulk), vector files (vector_io).

Import names from the module that defines them; the public API is `qembed.Client` and friends.
"""
