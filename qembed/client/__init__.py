"""The client: flow (sans-IO), drivers (I/O), results, bulk (+ readers), vector files (vector_io).

flow makes every decision, drivers move the bytes, results is what they return; bulk embeds
whole files with resume, readers reads their records, vector_io writes the vectors.

Import names from the module that defines them; the public API is `qembed.Client` and friends.
"""
