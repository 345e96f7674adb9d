"""Plain helpers shared by test modules (`from tests.helpers import ...`); fixtures live in conftest.py."""

import torch


class FakeTokenizer:
    """Stands in for a tokenizer where only `save_pretrained` is called (export writes it beside the model)."""

    def save_pretrained(self, folder):
        (folder / "tokenizer.json").write_text("{}")


def padded_batch(n: int, seq_len: int, seed: int = 0, vocab: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded token ids in [5, vocab) and their mask, both (n, seq_len); example 0 is padded from seq_len // 2."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (n, seq_len), generator=g)
    mask = torch.ones_like(ids)
    mask[0, seq_len // 2 :] = 0
    ids[mask == 0] = 0
    return ids, mask


def logits(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The model's logits (n, n_classes) in eval mode, without gradients."""
    with torch.no_grad():
        return model.eval()(input_ids=ids, attention_mask=mask).logits


def remote_code_logits(folder, ids: torch.Tensor, mask: torch.Tensor, work) -> torch.Tensor:
    """Logits of the saved model in `folder`, loaded with trust_remote_code=True in a fresh process
    where slimformer cannot be imported: what a user without slimformer gets. `work` holds the files."""
    import os
    import subprocess
    import sys

    torch.save({"ids": ids, "mask": mask}, work / "inputs.pt")
    script = (
        "import sys, torch\n"
        "sys.modules['compress'] = None  # slimformer is not importable here\n"
        "from transformers import AutoModelForSequenceClassification\n"
        f"d = torch.load({str(work / 'inputs.pt')!r})\n"
        f"m = AutoModelForSequenceClassification.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()\n"
        "assert 'transformers_modules' in type(m).__module__, type(m).__module__\n"
        "torch.save(m(input_ids=d['ids'], attention_mask=d['mask']).logits.detach(), sys.argv[1])\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(work / "modules"), "PYTHONPATH": ""}
    subprocess.run([sys.executable, "-c", script, str(work / "out.pt")], check=True, cwd=work, env=env, timeout=300)
    return torch.load(work / "out.pt")
