"""Distillation: each loss is 0 for an identical student and positive otherwise; gradients reach
only the student; students of another width, head count or kind train and export with parity."""

import copy

import pytest
import torch

from compress.models import SlimformerConfig, SlimformerForSequenceClassification, SlimRNNConfig, SlimRNNForSequenceClassification
from compress.onnx.export import ExportOptions, export_stage
from compress.steps.distill import Capture, DistillConfig, Distiller, default_layer_map, distill_loss, init_from_teacher_
from compress.training.losses import hidden_loss, logits_loss, relation_loss, soft_target_loss
from compress.training.transfer import augment
from tests.helpers import FakeTokenizer


def teacher_model(**kw):
    torch.manual_seed(0)
    base = dict(vocab_size=60, max_len=24, dim=32, n_layers=2, n_heads=4, ffn_dim=64, num_labels=3, dropout=0.0)
    return SlimformerForSequenceClassification(SlimformerConfig(**{**base, **kw})).eval()


def batch(n=4, seq_len=10):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 60, (n, seq_len), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 2, 0][:n])}


def test_soft_and_hidden_losses_zero_for_identical_positive_otherwise():
    x = torch.randn(4, 3)
    assert soft_target_loss(x, x, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_target_loss(x, x + torch.randn(4, 3), 2.0).item() > 0
    h, mask = torch.randn(2, 5, 8), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert hidden_loss(h, h, mask).item() == 0.0
    assert hidden_loss(h, h + 1, mask).item() == pytest.approx(1.0)
    changed = h.clone()
    changed[0, 3:] += 100.0  # padded positions do not count
    assert hidden_loss(h, changed, mask).item() == 0.0


def test_logits_loss_weighs_soft_targets_and_hard_labels():
    s, t, labels = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    ce = torch.nn.functional.cross_entropy(s, labels)
    torch.testing.assert_close(logits_loss(s, t, labels, 0.3, 0.7, 2.0), 0.3 * soft_target_loss(s, t, 2.0) + 0.7 * ce)
    torch.testing.assert_close(logits_loss(s, None, labels, 0.0, 1.0, 2.0), ce)  # no teacher needed without the soft term
    assert logits_loss(s, s, labels, 1.0, 0.0, 2.0).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("relations", [1, 2, 4])
def test_relation_loss_zero_for_identical_positive_otherwise(relations):
    q, k = torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1] * 6])
    assert relation_loss((q, k), (q, k), mask, relations).item() == pytest.approx(0.0, abs=1e-6)
    assert relation_loss((q, k), (q, torch.randn(2, 6, 8)), mask, relations).item() > 0
    # different widths (4 vs 8 per token) compare through relation heads
    assert relation_loss((q[..., :4], k[..., :4]), (q, k), mask, 2).item() > 0


def distill_cfg(**losses):
    return DistillConfig(losses={"logits": 1.0, "hard": 0.5, "hidden": 1.0, "attention": 1.0, **losses},
                         attention_form="value_relation")


def test_all_losses_zero_when_student_equals_teacher():
    teacher = teacher_model()
    student = copy.deepcopy(teacher)
    cfg = distill_cfg(hard=0.0)
    distiller = Distiller(student, teacher, [0, 1], cfg)
    loss, _ = distill_loss(teacher, [0, 1], cfg)(distiller, batch())
    assert loss.item() == pytest.approx(0.0, abs=1e-5)


def test_gradients_reach_the_student_only_across_widths_and_heads():
    teacher = teacher_model(n_layers=4)
    student = teacher_model(dim=16, n_heads=2, head_dim=8, ffn_dim=32)
    for p in teacher.parameters():
        p.requires_grad_(False)
    cfg = distill_cfg()
    layer_map = default_layer_map(2, 4)
    assert layer_map == [1, 3]
    distiller = Distiller(student, teacher, layer_map, cfg)
    loss, logits = distill_loss(teacher, layer_map, cfg)(distiller, batch())
    assert loss.item() > 0 and logits.shape == (4, 3)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for n, p in distiller.named_parameters() if "pos" not in n and "tok" not in n)
    assert isinstance(distiller.proj[0], torch.nn.Linear) and distiller.proj[0].weight.shape == (32, 16)


def test_distilled_student_learns_from_the_teacher():
    """A few steps of the distillation loss pull a fresh student's logits toward the teacher's."""
    teacher = teacher_model()
    student = teacher_model(dim=16, n_heads=2, head_dim=8)
    cfg = distill_cfg(hard=0.0, hidden=0.0, attention=0.0)
    distiller = Distiller(student, teacher, [0, 1], cfg)
    loss_fn = distill_loss(teacher, [0, 1], cfg)
    opt = torch.optim.Adam(distiller.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss, _ = loss_fn(distiller, batch())
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 2


def test_init_from_teacher_copies_mapped_layers_and_truncates():
    teacher = teacher_model(n_layers=4)
    student = teacher_model(n_layers=2)
    counts = init_from_teacher_(student, teacher, [1, 3])
    assert counts["fresh"] == 0 and counts["truncated"] == 0
    assert torch.equal(student.layers[1].attn.q_proj.weight, teacher.layers[3].attn.q_proj.weight)
    narrow = teacher_model(dim=16, n_heads=2, head_dim=8, ffn_dim=32)
    counts = init_from_teacher_(narrow, teacher, [0, 2])
    assert counts["truncated"] > 0
    assert torch.equal(narrow.layers[1].mlp.up_proj.weight, teacher.layers[2].mlp.up_proj.weight[:32, :16])


def test_augment_adds_teacher_labelled_copies():
    split = batch()
    out = augment(split, DistillConfig(augment={"copies": 2, "mask": 0.5, "swap": 0.5}).augment, seed=0,
                  special_ids=[0, 1, 2, 3, 4], mask_id=4)
    assert out["input_ids"].shape == (12, 10) and (out["labels"][4:] == -1).all()
    assert torch.equal(out["input_ids"][:4], split["input_ids"])
    assert not torch.equal(out["input_ids"][4:8], split["input_ids"])
    assert torch.equal(out["attention_mask"][4:8], split["attention_mask"])  # padding untouched


def test_capture_hooks_are_removed():
    model = teacher_model()
    captured = Capture(model, [0, 1])
    model(**{k: v for k, v in batch().items() if k != "labels"})
    assert len(captured.out) == 6
    captured.remove()
    model(**{k: v for k, v in batch().items() if k != "labels"})
    assert captured.out == {}


@pytest.mark.parametrize("cell", ["boe", "gru", "lstm"])
def test_non_transformer_students_export_with_parity(cell, tmp_path):
    torch.manual_seed(0)
    model = SlimRNNForSequenceClassification(SlimRNNConfig(vocab_size=60, max_len=24, cell=cell, dim=16, hidden_dim=8,
                                                           num_labels=3)).eval()
    b = batch()
    parity = export_stage(model, FakeTokenizer(), tmp_path / "onnx", (b["input_ids"], b["attention_mask"]), ExportOptions())
    assert parity["max_abs_diff"] <= 1e-4
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    for shape in [(1, 3), (7, 17)]:  # batch and length stay dynamic
        ids = torch.randint(5, 60, shape)
        mask = torch.ones_like(ids)
        mask[0, shape[1] // 2 :] = 0
        got = session.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(got), model(input_ids=ids, attention_mask=mask).logits, atol=1e-4,
                                       rtol=1e-4)
    model.save_pretrained(tmp_path / "model")
    from transformers import AutoModelForSequenceClassification

    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model").eval()
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits,
                           model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits)


def test_rnn_student_is_blind_to_padding():
    torch.manual_seed(0)
    model = SlimRNNForSequenceClassification(SlimRNNConfig(vocab_size=60, max_len=24, cell="lstm", dim=16, hidden_dim=8,
                                                           num_labels=3)).eval()
    ids = torch.randint(5, 60, (2, 7))
    padded = torch.cat([ids, torch.zeros(2, 5, dtype=torch.long)], 1)
    mask = torch.cat([torch.ones(2, 7), torch.zeros(2, 5)], 1).long()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, model(input_ids=padded, attention_mask=mask).logits)


def test_bad_distill_settings_are_errors():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="need a transformer student"):
        DistillConfig(student={"kind": "gru"}, losses={"hidden": 1.0})
    with pytest.raises(ValidationError, match="every loss weight is 0"):
        DistillConfig(losses={"logits": 0.0})


def test_augment_takes_special_and_mask_ids_from_the_tokenizer():
    """An imported vocabulary ([CLS] 101, [SEP] 102, [MASK] 103): specials stay, masks are 103; no mask token: unk, said."""
    from types import SimpleNamespace

    from compress.training.transfer import special_token_ids

    bert = SimpleNamespace(all_special_ids=[0, 100, 101, 102, 103], mask_token_id=103, unk_token_id=100, unk_token="[UNK]")
    special, mask_id, note = special_token_ids(bert)
    assert (special, mask_id, note) == ([0, 100, 101, 102, 103], 103, None)
    ids = torch.tensor([[101, 7, 8, 9, 10, 11, 102, 0]])
    split = {"input_ids": ids, "attention_mask": (ids != 0).long(), "labels": torch.tensor([1])}
    out = augment(split, DistillConfig(augment={"copies": 3, "mask": 0.9, "swap": 0.0}).augment, seed=0, special_ids=special,
                  mask_id=mask_id)
    copies = out["input_ids"][1:]
    assert (copies[:, 0] == 101).all() and (copies[:, 6] == 102).all() and (copies[:, 7] == 0).all()
    assert (copies[:, 1:6] == 103).any() and not torch.isin(copies[:, 1:6], torch.tensor([0, 4])).any()

    no_mask = SimpleNamespace(all_special_ids=[0, 1], mask_token_id=None, unk_token_id=1, unk_token="<unk>")
    assert special_token_ids(no_mask) == ([0, 1], 1, "the tokenizer has no mask token: masked tokens become '<unk>'")


def test_unlabeled_files_read_as_lines_or_a_column_with_clear_errors(tmp_path):
    from compress.data.unlabeled import read_unlabeled
    from compress.errors import DataError

    (tmp_path / "a.txt").write_text("first text\n\n  second text  \n")
    (tmp_path / "b.csv").write_text("id,body\n1,hello there\n2,\n3,general\n")
    assert read_unlabeled("a.txt", base_dir=tmp_path)[0] == ["first text", "second text"]
    assert read_unlabeled("b.csv", "body", base_dir=tmp_path)[0] == ["hello there", "general"]
    with pytest.raises(DataError, match=r"b\.csv has no column 'text'.*'body'.*unlabeled_column"):
        read_unlabeled("b.csv", base_dir=tmp_path)
    with pytest.raises(DataError, match=r"unlabeled file .*nope\.txt not found"):
        read_unlabeled("nope.txt", base_dir=tmp_path)
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(DataError, match=r"empty\.txt holds no text"):
        read_unlabeled("empty.txt", base_dir=tmp_path)
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unlabeled file 'x.docx'"):
        DistillConfig(unlabeled=["x.docx"])
