"""describe_device: the summary a result records names non-default compiler flags."""

from svae_core.reporting import describe_device


def test_summary_names_xla_flags_only_when_set(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    info = describe_device()
    assert info["xla_flags"] == "--xla_backend_optimization_level=0"
    assert info["summary"].endswith("; XLA_FLAGS=--xla_backend_optimization_level=0")
    monkeypatch.setenv("XLA_FLAGS", "")
    info = describe_device()
    assert info["xla_flags"] == "" and "XLA_FLAGS" not in info["summary"]
    assert info["summary"].startswith(("CPU: ", "GPU: ", "TPU: "))
