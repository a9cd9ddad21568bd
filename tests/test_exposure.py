"""The one exposure rule (qembed.serving.policy.exposure, issue 22 item 6): a listener beyond
loopback without an API key. Every caller decides by it, each at its own level: serve warns, the
gateway refuses, doctor / `profiles show` list the profile setting, a docker plan adds a note."""

from __future__ import annotations

import pytest

from qembed.errors import ConfigError
from qembed.fleet.deploy import docker
from qembed.serving import gateway, policy
from qembed.serving.profiles.model import Profile
from qembed.serving.profiles.resolve import load_profile
from qembed.serving.sglang_args import profile_warnings
from qembed.serving.supervisor import exposure_warning

# (host, beyond loopback): the loopback test is qembed.net.is_loopback's, for every caller
HOSTS = [("127.0.0.1", False), ("127.0.0.2", False), ("::1", False), ("localhost", False),
         ("0.0.0.0", True), ("10.0.0.5", True), ("::", True)]


@pytest.mark.parametrize("keyed", [False, True])
@pytest.mark.parametrize("host,beyond", HOSTS)
def test_every_caller_decides_by_the_one_rule(host: str, beyond: bool, keyed: bool,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    exposed = beyond and not keyed
    monkeypatch.delenv("QEMBED_API_KEY", raising=False)
    if keyed:
        monkeypatch.setenv("QEMBED_API_KEY", "k")
    key = "k" if keyed else None

    assert (exposure_warning(Profile(host=host), key) is not None) is exposed
    assert any("accepts connections from other machines" in w
               for w in profile_warnings(Profile(host=host))) is exposed
    if exposed:
        with pytest.raises(ConfigError, match="without an API key"):
            gateway.check_exposure(host, key)
    else:
        gateway.check_exposure(host, key)
    plan = docker.plan_container(load_profile("h100"), bind=host, api_key=keyed)
    assert any("without an API key" in n for n in plan.notes) is exposed


@pytest.mark.parametrize("level", ["fail", "warn", "info"])
def test_the_caller_picks_the_level(level: str) -> None:
    found = policy.exposure("0.0.0.0", keyed=False, level=level, listener="server",  # type: ignore[arg-type]
                            port=31000, key_env="MY_KEY")
    assert found is not None and found.level == level and found.check == "exposure"
    assert found.message == ("SGLang will listen on `0.0.0.0`: anyone who can reach port 31000 can use "
                             "the server, and no API key is set")
    assert found.hint is not None and "`MY_KEY`" in found.hint


def test_profile_words_name_its_key_variable() -> None:
    """The profile row names the profile's own key variable, not the default one."""
    (line,) = [w for w in profile_warnings(Profile(host="0.0.0.0", api_key_env="TEAM_KEY"))
               if "accepts connections" in w]
    assert line == ("`host: 0.0.0.0` accepts connections from other machines and no API key is set "
                    "(`TEAM_KEY` or `api_key_file`)")
