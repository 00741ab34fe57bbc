"""CPU precision policy: bf16 autocast only where the CPU has bf16 instructions."""

import json

import pytest
import torch

from cnr_fast import hardware
from cnr_fast.train import amp_context

AVX2_ONLY = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx avx2 fma\n\n"
AMX = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\nflags\t\t: avx2 fma avx512f avx512_bf16 amx_tile amx_bf16\n"


@pytest.fixture
def fake_cpu(tmp_path, monkeypatch):
    def use(text):
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        info = hardware.cpu_info.__wrapped__(str(path))
        monkeypatch.setattr(hardware, "cpu_info", lambda: info)
        monkeypatch.setattr(hardware, "_warned", False)
        return info
    monkeypatch.delenv("CNR_FAST_CPU_AMP", raising=False)
    return use


def test_cpuinfo_parsed(fake_cpu):
    info = fake_cpu(AMX)
    assert info["model"] == "Intel(R) Xeon(R) Platinum 8481C"
    assert info["vector_flags"] == ["avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"]
    assert info["bf16_instructions"] == "amx_bf16"
    assert hardware.cpu_amp_policy()["bf16"]


def test_amp_on_a_cpu_without_bf16_runs_fp32_and_says_why(fake_cpu, capsys, monkeypatch):
    fake_cpu(AVX2_ONLY)
    x = torch.randn(4, 4)
    with amp_context(torch.device("cpu"), True):
        assert (x @ x).dtype == torch.float32
    err = capsys.readouterr().err
    assert "AMD EPYC 7B13" in err and "no bf16 instructions" in err and "CNR_FAST_CPU_AMP=force" in err
    with amp_context(torch.device("cpu"), True):  # warned once
        pass
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("CNR_FAST_CPU_AMP", "force")
    with amp_context(torch.device("cpu"), True):
        assert (x @ x).dtype == torch.bfloat16


def test_amp_on_a_bf16_cpu_autocasts(fake_cpu):
    fake_cpu(AMX)
    x = torch.randn(4, 4)
    with amp_context(torch.device("cpu"), True):
        assert (x @ x).dtype == torch.bfloat16


def test_doctor_reports_cpu_model_and_precision(capsys):
    from cnr_fast.cli import main

    assert main(["doctor", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["cpu"]["model"] == hardware.cpu_info()["model"]
    assert isinstance(info["cpu"]["amp_bf16"]["bf16"], bool) and info["cpu"]["amp_bf16"]["reason"]


def test_prepare_run_records_fp32_when_amp_is_refused(fake_cpu):
    from cnr_fast.cli.running import prepare_run
    from cnr_fast.config import RunConfig

    fake_cpu(AVX2_ONLY)
    cfg, _, _ = prepare_run(RunConfig().replace(amp=True, device="cpu", data={"dataset": "digits"}), quiet=True)
    assert cfg.amp is False
