"""The world model's training module: planted routing, EMA, loss falls, export reproduces it."""

import copy
import json
import math
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from diffusers import DiffusionPipeline
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import default_collate

from loco_lightning.data.world import WorldDataset
from loco_lightning.data.world.datamodule import WorldDataModule
from loco_lightning.hooks import PromptSwap
from loco_lightning.models.world import RECORD_NAME, WORLD_DENOISERS
from loco_lightning.training.world import EMAWarmup, WarmupEMA, WorldDiffusion
from tests.helpers import trainer_stub

PLANTED = {"colour": [5, 6], "style": [3, 4]}


def test_planted_windows_are_validated():
    with pytest.raises(ValueError, match="plantable"):
        WorldDiffusion(planted={"size": [1]})
    with pytest.raises(ValueError, match="site indices in 0..6"):
        WorldDiffusion(planted={"colour": [6, 7]})
    with pytest.raises(ValueError, match="non-empty"):
        WorldDiffusion(planted={"colour": []})


def test_denoiser_overrides_must_be_keys_of_the_family_config():
    with pytest.raises(ValueError, match=r"\['attention_heads'\] are not UNet2DConditionModel"):
        WorldDiffusion(denoiser={"attention_heads": 2})
    # windows are checked against the overridden denoiser's sites (two layers per block: 11)
    with pytest.raises(ValueError, match=r"0\.\.6 \(the sd1 world has 7\)"):
        WorldDiffusion(planted={"colour": [9, 10]})
    WorldDiffusion(denoiser={"layers_per_block": 2}, planted={"colour": [9, 10]})


def test_each_site_reads_the_caption_without_the_attributes_planted_elsewhere():
    module = WorldDiffusion(planted=PLANTED)
    assert module.caption_variants == (("colour",), ("colour", "style"), ("style",))
    assert WorldDiffusion().caption_variants == ()


BATCH = {
    "caption": ["a red striped circle", "a blue star", ""],
    # variants in caption_variants order: -colour, -colour-style, -style
    "variants": [
        ["a striped circle", "a star", ""],
        ["a circle", "a star", ""],
        ["a red circle", "a blue star", ""],
    ],
}
WHOLE = {"colour": torch.tensor([-1, -1, -1]), "style": torch.tensor([-1, -1, -1])}


def test_planted_swaps_route_removed_captions_outside_the_windows():
    module = WorldDiffusion(planted=PLANTED)
    swaps = module.planted_swaps(BATCH, full=torch.tensor([False, False, False]), alone=WHOLE)
    assert set(swaps) == {
        PromptSwap((3, 4), "a striped circle", samples=(0,)),
        PromptSwap((0, 1, 2), "a circle", samples=(0,)),
        PromptSwap((5, 6), "a red circle", samples=(0,)),
        PromptSwap((0, 1, 2, 3, 4), "a star", samples=(1,)),  # "blue" reaches 5-6 only
    }
    assert module.planted_swaps(BATCH, full=torch.tensor([True, True, True])) == []
    assert WorldDiffusion().planted_swaps({"caption": ["a red circle"]}) == []


def test_planting_alone_shows_the_attribute_to_one_site_of_its_window():
    """Sample 0 shows colour to site 6 alone (window position 1), style to all of 3-4."""
    module = WorldDiffusion(planted=PLANTED, planted_alone_p=0.5)
    alone = {"colour": torch.tensor([1, 0, -1]), "style": torch.tensor([-1, -1, -1])}
    swaps = module.planted_swaps(BATCH, full=torch.tensor([False, False, False]), alone=alone)
    assert set(swaps) == {
        PromptSwap((0, 1, 2, 5), "a circle", samples=(0,)),  # site 5 loses colour too
        PromptSwap((3, 4), "a striped circle", samples=(0,)),
        PromptSwap((6,), "a red circle", samples=(0,)),
        PromptSwap((0, 1, 2, 3, 4, 6), "a star", samples=(1,)),  # "blue" reaches site 5 only
    }
    draws = module.draw_alone(4000)
    colour = draws["colour"]
    assert set(colour.tolist()) == {-1, 0, 1} and abs((colour >= 0).float().mean() - 0.5) < 0.05
    state = torch.random.get_rng_state()
    assert (WorldDiffusion(planted=PLANTED).draw_alone(5)["style"] == -1).all()
    assert torch.equal(state, torch.random.get_rng_state())  # p = 0 draws nothing


def test_a_global_text_path_reads_the_caption_without_any_planted_attribute():
    """SD-XL's pooled text_embeds (and IF's text-time embedding) would carry colour past any
    window: they read the all-removed caption, except on the full samples."""
    module = WorldDiffusion(planted={"colour": [5, 6, 7], "style": [9, 10, 11]}, family="sdxl")
    alone = {"colour": torch.tensor([-1, -1, -1]), "style": torch.tensor([-1, -1, -1])}
    swaps = module.planted_swaps(BATCH, full=torch.tensor([False, True, False]), alone=alone)
    pooled = [s for s in swaps if s.pooled]
    assert pooled == [PromptSwap((), "a circle", samples=(0,), pooled=True)]
    assert {s.samples for s in swaps} == {(0,)}


def test_the_variational_bound_vanishes_at_the_true_posterior_and_matches_a_gaussian_kl():
    module = WorldDiffusion(family="if")
    module.setup("fit")
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, 4, 4, generator=gen) * 2 - 1
    noise = torch.randn(4, 3, 4, 4, generator=gen)
    t = torch.tensor([1, 10, 500, 999])
    xt = module.noise_scheduler.add_noise(x0, noise, t)
    at_posterior = module.variational_bound(x0, xt, noise, -torch.ones_like(x0), t)
    assert at_posterior.abs().max() < 1e-5
    eps, v = torch.randn(4, 3, 4, 4, generator=gen), torch.rand(4, 3, 4, 4, generator=gen) * 2 - 1
    bound = module.variational_bound(x0, xt, eps, v, t)
    # reference: torch.distributions on the same means and variances (DDPM's posterior algebra)
    ab = module.noise_scheduler.alphas_cumprod
    a, prev = ab[t].view(-1, 1, 1, 1), ab[t - 1].view(-1, 1, 1, 1)
    beta = 1 - a / prev
    q_var = beta * (1 - prev) / (1 - a)
    mean = lambda x: (prev.sqrt() * beta * x + (1 - beta).sqrt() * (1 - prev) * xt) / (1 - a)  # noqa: E731
    x0_hat = (xt - (1 - a).sqrt() * eps) / a.sqrt()
    p_var = torch.exp((v + 1) / 2 * beta.log() + (1 - v) / 2 * q_var.log())
    q = torch.distributions.Normal(mean(x0), q_var.sqrt())
    p = torch.distributions.Normal(mean(x0_hat), p_var.sqrt())
    expected = torch.distributions.kl_divergence(q, p).mean((1, 2, 3)) / math.log(2)
    assert torch.allclose(bound, expected, rtol=1e-4, atol=1e-6) and (bound > 0).all()


def test_ema_follows_early_weights_then_averages():
    update = EMAWarmup(0.999)
    avg, cur = [torch.zeros(3)], [torch.ones(3)]
    update(avg, cur, torch.tensor(1))  # decay (1 + 1) / (10 + 1)
    assert torch.allclose(avg[0], torch.full((3,), 1 - 2 / 11))
    avg = [torch.zeros(3)]
    update(avg, cur, torch.tensor(100_000))
    assert torch.allclose(avg[0], torch.full((3,), 0.001))


def test_the_listed_average_updates_exactly_as_averaged_model():
    """The same average, buffers and state-dict keys as ``AveragedModel`` with ``EMAWarmup``
    (checkpoints of either resume in the other), also after the model's tensors are replaced
    in place (a memory-format change) between updates and in a deep copy of the average."""
    torch.manual_seed(0)
    model = WorldDiffusion(family="sdxl")
    model.setup("fit")
    net = model.net
    ours = WarmupEMA(net, 0.9)
    reference = AveragedModel(net, multi_avg_fn=EMAWarmup(0.9), use_buffers=False)
    for step in range(4):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
            for b in net.buffers():
                b.add_(1)
        if step == 2:
            net["unet"].to(memory_format=torch.contiguous_format)
        ours.update_parameters(net)
        reference.update_parameters(net)
        if step == 1:  # a copy lists its own tensors
            ours = copy.deepcopy(ours)
    theirs = reference.state_dict()
    assert ours.state_dict().keys() == theirs.keys()
    assert all(torch.equal(t, theirs[k]) for k, t in ours.state_dict().items())


def test_training_from_scratch_lowers_the_loss_and_export_reproduces_the_ema(
    tmp_path, quick_trainer
):
    L.seed_everything(0)
    module = WorldDiffusion(
        planted={"colour": [5, 6]}, warmup_steps=5, val_steps=3, denoiser={"attention_head_dim": 2}
    )
    data = WorldDataModule(batch_size=16)
    module.setup("fit")
    held = WorldDataset(length=32, seed=99, variants=module.caption_variants)
    held = default_collate([held[i] for i in range(32)])
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(module.latents(held["image"]).shape, generator=gen)  # (32, 4, 8, 8)
    t = torch.randint(0, 1000, (32,), generator=gen)
    full = torch.zeros(32, dtype=torch.bool)

    def loss() -> float:
        torch.manual_seed(1)  # the same latent draws from the VAE posterior each time
        with torch.no_grad():
            return module.diffusion_loss(held, noise, t, full).item()

    before = loss()
    trainer = quick_trainer(30)
    trainer.fit(module, data)
    after = loss()
    assert after < 0.6 * before, (before, after)

    captions, seeds = ["a red striped circle", "a zorblax", ""], [0, 1, 2]
    expected = module.generate(captions, seeds)
    module.export(tmp_path, {"steps": trainer.global_step})
    record = json.loads((tmp_path / RECORD_NAME).read_text())
    assert record["world"]["planted"] == {"colour": [5, 6]} and record["steps"] == 30
    assert record["parameters"]["unet"] > 1_000_000
    assert json.loads((tmp_path / "unet" / "config.json").read_text())["attention_head_dim"] == 2
    pipe = DiffusionPipeline.from_pretrained(tmp_path)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    images = pipe(
        captions, num_inference_steps=3, guidance_scale=1.5, generator=generators, output_type="pt"
    ).images
    assert torch.allclose(images, expected, atol=1e-6)
    assert list(tmp_path.glob("*/*.safetensors")) and not list(tmp_path.glob("**/*.bin"))
    # the shared autoencoder is named as packaged, not by this machine's path to it
    vae = json.loads((tmp_path / "vae" / "config.json").read_text())
    assert vae["_name_or_path"] == "world-vae"


def test_velocity_worlds_weight_min_snr_by_snr_plus_one():
    module = WorldDiffusion(snr_gamma=5.0, family="sd2")
    module.setup("fit")
    assert module.noise_scheduler.config.prediction_type == "v_prediction"
    t = torch.tensor([0, 500, 999])
    alpha_bar = module.noise_scheduler.alphas_cumprod[t]
    snr = alpha_bar / (1 - alpha_bar)
    assert torch.allclose(module.loss_weights(t), snr.clamp(max=5.0) / (snr + 1))


def test_min_snr_weights_cap_the_clean_timesteps_and_leave_the_noisy_ones():
    module = WorldDiffusion(snr_gamma=5.0)
    module.setup("fit")
    t = torch.tensor([0, 100, 500, 999])
    alpha_bar = module.noise_scheduler.alphas_cumprod[t]
    snr = alpha_bar / (1 - alpha_bar)
    expected = torch.where(snr > 5.0, 5.0 / snr, torch.ones_like(snr))
    assert torch.allclose(module.loss_weights(t), expected)
    assert module.loss_weights(t)[0] < 0.01 and module.loss_weights(t)[-1] == 1.0
    assert torch.equal(WorldDiffusion().loss_weights(t), torch.ones(4))


@pytest.mark.parametrize(
    ("family", "pipeline", "n_sites"),
    [("sdxl", "StableDiffusionXLPipeline", 18), ("if", "IFPipeline", 7)],
)
def test_sdxl_and_if_worlds_export_their_own_pipelines(family, pipeline, n_sites, tmp_path):
    """An untrained world of each family exports a folder plain diffusers loads, whose own
    ``__call__`` reproduces the module's generations (IF: its stochastic DDPM too)."""
    from loco_lightning.hooks import sites

    torch.manual_seed(0)  # the random weights, whatever ran before
    module = WorldDiffusion(family=family, val_steps=3)
    module.setup("fit")
    assert len(sites(module.net["unet"])) == n_sites
    captions, seeds = ["a red striped circle", ""], [0, 1]
    expected = module.generate(captions, seeds)
    module.export(tmp_path, {"steps": 0})
    pipe = DiffusionPipeline.from_pretrained(tmp_path)
    assert type(pipe).__name__ == pipeline
    images = pipe(
        captions,
        num_inference_steps=3,
        guidance_scale=1.5,
        generator=[torch.Generator().manual_seed(s) for s in seeds],
        output_type="np",
    ).images
    # float order only: IF's three DDPM steps differ by 1.1-1.5e-6 on random weights (1e-6 held
    # or failed with whatever drew the weights before); SD-XL's by under 1e-6
    atol = 1e-5 if family == "if" else 1e-6
    assert torch.allclose(torch.from_numpy(images).permute(0, 3, 1, 2), expected, atol=atol)


@pytest.mark.parametrize("family", sorted(WORLD_DENOISERS))
def test_every_trainable_parameter_reaches_the_loss(family):
    """What plain DDP needs; the parameters no conditioning reaches are frozen (only SD-XL's:
    its first encoder is read at the penultimate layer, so its last layer and final norm)."""
    module = WorldDiffusion(family=family, planted={"colour": [1, 2]})
    module.setup("fit")
    frozen = {p for p in module.net.parameters() if not p.requires_grad}  # by identity
    unread = set()
    if family == "sdxl":
        clip = module.net["text_encoder"]
        unread = {*clip.encoder.layers[-1].parameters(), *clip.final_layer_norm.parameters()}
    assert frozen == unread
    data = WorldDataset(length=4, seed=0, variants=module.caption_variants)
    module.diffusion_loss(default_collate([data[i] for i in range(4)])).backward()
    lost = [n for n, p in module.net.named_parameters() if p.requires_grad and p.grad is None]
    assert not lost


def test_ddp_processes_draw_their_own_noise_one_process_keeps_its_stream():
    module = WorldDiffusion()
    draws = {}
    for processes, rank in ((1, 0), (2, 0), (2, 1)):
        torch.manual_seed(5)
        expected = torch.randn(4)
        torch.manual_seed(5)
        module._trainer = SimpleNamespace(world_size=processes, global_rank=rank)
        module.on_train_start()
        draws[processes, rank] = torch.randn(4)
        if processes == 1:
            assert torch.equal(draws[1, 0], expected)
    assert not torch.equal(draws[2, 0], draws[2, 1])


def test_dropping_a_captions_tail_keeps_its_tokens_and_empties_the_rest():
    module = WorldDiffusion(tail_drop_p=1.0)
    module.setup("fit")
    captions = ["a red circle", "", "a blue striped square"]
    ids = module.tokenizers["tokenizer"](captions, padding="max_length").input_ids
    eos = module.tokenizers["tokenizer"].eos_token_id
    with torch.no_grad():
        cond = module.encode(captions)
        dropped = module.drop_tail(captions, cond).context
        empty = module.encode([""]).context[0]
    tails = [tokens.index(eos) for tokens in ids]
    for b, tail in enumerate(tails):
        assert torch.equal(dropped[b, :tail], cond.context[b, :tail])
        assert torch.equal(dropped[b, tail:], empty[tail:])
    assert not torch.equal(dropped[0, tails[0] :], cond.context[0, tails[0] :])  # a tail to drop
    module.hparams.tail_drop_p = 0.0
    assert module.drop_tail(captions, cond) is cond
    with pytest.raises(ValueError, match=r"tail_drop_p=0.5 needs a CLIP-conditioned family"):
        WorldDiffusion(family="if", tail_drop_p=0.5)
    with pytest.raises(ValueError, match=r"tail_drop_p=2.0 must be a probability"):
        WorldDiffusion(tail_drop_p=2.0)


def test_pooled_renders_are_encoded_once_and_their_latents_drawn_as_uncached_ones(monkeypatch):
    module = WorldDiffusion()
    module.setup("fit")
    dm = WorldDataModule(batch_size=4, pool=4)
    dm.trainer = trainer_stub(max_steps=2)
    first, again = list(dm.train_dataloader())
    encoded = []
    encode = module.vae.encode
    monkeypatch.setattr(module.vae, "encode", lambda x: encoded.append(len(x)) or encode(x))
    latents = {}
    for name, batch in (("cold", first), ("cached", again), ("plain", {"image": first["image"]})):
        torch.manual_seed(3)
        latents[name] = module.latents(batch["image"], batch.get("pool_index"))
    assert encoded == [4, 4]  # the first pooled batch and the unpooled one, not the repeat
    assert sorted(module.posteriors) == [0, 1, 2, 3]
    assert torch.equal(latents["cached"], latents["cold"])
    assert torch.equal(latents["cold"], latents["plain"])
    torch.manual_seed(4)  # the posterior is sampled, not its mean kept
    assert not torch.equal(module.latents(again["image"], again["pool_index"]), latents["cold"])


@pytest.mark.parametrize("family", ["sd1", "sdxl", "if"])
def test_remembering_tokenizers_train_exactly_as_the_plain_ones(family):
    """The training pipeline's tokenizers remember captions (4 % of a planted SD-XL step); the
    loss and every gradient are the plain tokenizers' bit for bit, also when the captions come
    from memory."""
    module = WorldDiffusion(family=family, planted={"colour": [1, 2]})
    module.setup("fit")
    data = WorldDataset(length=6, seed=0, variants=module.caption_variants)
    batch = default_collate([data[i] for i in range(6)])
    remembering = module.train_pipe

    def loss_and_grads(pipe):
        module.train_pipe = pipe
        module.net.zero_grad()
        torch.manual_seed(0)
        loss = module.diffusion_loss(batch)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in module.net.parameters() if p.requires_grad]

    plain = loss_and_grads(module._pipeline(module.net))
    assert type(remembering.tokenizer).__name__ == "RememberingTokenizer"
    for _ in range(2):  # tokenized, then remembered
        loss, grads = loss_and_grads(remembering)
        assert torch.equal(loss, plain[0])
        assert all(torch.equal(g, h) for g, h in zip(grads, plain[1]))
