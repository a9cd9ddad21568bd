"""Deployment profiles: every setting of one SGLang server, in *user terms*, as YAML.

A profile holds ``gpu_memory_fraction``, ``context_length``, ...; :mod:`qembed.serving.sglang_args`
maps each key onto the real SGLang 0.5.23 flag. API keys are never read from a profile: a profile
names the environment variable (``api_key_env``) or the file (``api_key_file``) that holds the key.

Modules (import each name from the module that defines it; this package re-exports nothing):

* :mod:`qembed.serving.profiles.model`: the pydantic ``Profile``, its value checks, SGLang's
  choice lists, ``engine_name``;
* :mod:`qembed.serving.profiles.loader`: the bounded YAML loader (size, depth, aliases);
* :mod:`qembed.serving.profiles.resolve`: shipped-profile lookup, ``extends``, ``--set``
  overrides, the ``auto`` pick by GPU, ``load_profile``, ``resolve_api_key``;
* :mod:`qembed.serving.profiles.display`: what ``profiles list/show`` and ``serve --dry-run`` print.
"""
