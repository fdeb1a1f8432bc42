"""DeepSpeed's order without DeepSpeed (it installs from PyPI here but accelerate will not run it on CPU: see
benchmarks/deepspeed_zero_gpu.py for the real 2-GPU ZeRO-2/3 check): accelerate's DeepSpeed `backward` runs the
engine's optimizer step INSIDE backward and zeroes the gradients, and the Trainer's own `optimizer.step()` is a no-op,
so `on_pre_optimizer_step` comes after the update with `.grad` gone. The backward hook still modulates (the same model
as the pre-optimizer-step mode on a normal trainer); `pre_optimizer_step` would silently do nothing, and is refused."""

import pytest
from test_modulation import DATA, make_args, make_model

from hf_mmbalance import MultimodalTrainer
from hf_mmbalance.methods.modulation import GradientModulationCallback
from hf_mmbalance.trainer.distributed import TrainingEngine


class DeepSpeedOrderTrainer(MultimodalTrainer):
    """MultimodalTrainer with DeepSpeed's step order. `announce=False`: the callbacks are told a plain one-process
    engine (what a method unaware of DeepSpeed would assume)."""

    def __init__(self, *args, announce: bool = True, **kwargs):
        self.announce = announce
        super().__init__(*args, **kwargs)

    def training_engine(self) -> TrainingEngine:
        return TrainingEngine("deepspeed" if self.announce else "single", self.args.world_size)

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        real_step = optimizer.step

        def backward(loss, **kwargs):  # DeepSpeedEngineWrapper.backward: engine.backward(loss); engine.step()
            loss.backward()
            real_step()
            optimizer.zero_grad(set_to_none=True)

        self.accelerator.backward = backward
        optimizer.step = lambda *args, **kwargs: None  # accelerate's DeepSpeed optimizer wrapper: the step already ran
        return optimizer


def train(tmp_path, trainer_class, callbacks, **kwargs):
    trainer = trainer_class(model=make_model(), args=make_args(tmp_path, num_train_epochs=1), train_dataset=DATA["train"],
                            callbacks=callbacks, **kwargs)
    trainer.train()
    return dict(trainer.model.named_parameters())


def max_difference(a, b):
    return max(float((a[name] - b[name]).abs().max()) for name in a)


def test_the_hook_modulates_under_deepspeeds_order_and_pre_optimizer_step_is_refused(tmp_path):
    options = dict(mode="ada2i", alpha=0.5, noise=False)
    reference = train(tmp_path / "ref", MultimodalTrainer, [GradientModulationCallback(apply="pre_optimizer_step", **options)])
    plain = train(tmp_path / "plain", MultimodalTrainer, [])
    assert max_difference(reference, plain) > 1e-3  # modulation changes this run

    hooked = GradientModulationCallback(apply="auto", **options)
    deepspeed = train(tmp_path / "ds", DeepSpeedOrderTrainer, [hooked])
    assert hooked.applied == "backward_hook" and min(hooked.last_coefficients.values()) < 1
    assert max_difference(deepspeed, reference) < 1e-6  # modulated exactly as the normal trainer does

    # What pre_optimizer_step would do there, had the engine not been announced: nothing at all.
    unaware = train(tmp_path / "unaware", DeepSpeedOrderTrainer, [GradientModulationCallback(apply="auto", **options)],
                    announce=False)
    assert max_difference(unaware, plain) < 1e-6

    with pytest.raises(ValueError, match="fires AFTER the update"):
        train(tmp_path / "refused", DeepSpeedOrderTrainer, [GradientModulationCallback(apply="pre_optimizer_step", **options)])
    with pytest.raises(ValueError, match="noise=False"):
        train(tmp_path / "noise", DeepSpeedOrderTrainer, [GradientModulationCallback(mode="ada2i", noise=True)])
