"""Score a trained model's open-loop predictions on its held-out episodes (see configs/predict.yaml).

python scripts/predict.py run_dir=outputs/train/hopper-medium/<time>               # actions=data, H=100
python scripts/predict.py run_dir=<run> actions=model context=1 name=markovian-model
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ttrl.cli import exit_on_user_error
from ttrl.config import run_hydra_main  # also registers the resolvers predict.yaml uses
from ttrl.evaluation.runner import choose_run_dir
from ttrl.prediction.config import PredictConfig  # noqa: F401  (stores predict_schema)
from ttrl.prediction.runner import register_resolvers, run_prediction

register_resolvers()


@hydra.main(config_path="../configs", config_name="predict", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    from ttrl.config import save_hydra_record

    out_dir = HydraConfig.get().runtime.output_dir
    config = choose_run_dir(OmegaConf.to_container(cfg, resolve=True), out_dir, "predicting")
    results = run_prediction(config, out_dir, on_checked=lambda: save_hydra_record(out_dir, cfg))
    for name, model in results["models"].items():
        summary = model["summary"]
        print(
            f"{name}: log-likelihood {summary['log_likelihood_mean_over_horizon']:.1f} nats "
            f"and RMSE {summary['rmse_mean_over_horizon']:.3f} on average over "
            f"{config['horizon']} steps ({results['n_starts']} start points)"
        )
    print(f"results : {out_dir}")


if __name__ == "__main__":
    run_hydra_main(main)
