"""Re-evaluate a saved run: `python -m mfn4rec_tf.evaluate --run RUN_DIR [--split test|valid]`.

Reads the run's `config.yaml`, rebuilds the same split of the same data, loads the run's model
(`model.keras` for the test split, `best.keras` for validation) and prints the full-ranking metrics,
computed by the same code as during training.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mfn4rec_tf.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="run directory written by python -m mfn4rec_tf.fit")
    parser.add_argument("--split", choices=("test", "valid"), default="test", help="which split (default: test)")
    parser.add_argument("--exclude-history", action=argparse.BooleanOptionalAction, default=None,
                        help="override the run's train.exclude_history")
    parser.add_argument("--id-inference-scale", type=float, metavar="S",
                        help="id+features models: weigh the items' ID part by S in [0, 1] (see README, New items)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")
    from mfn4rec_tf import cli

    cli.add_threads_argument(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from mfn4rec_tf.metrics import format_groups, format_table
    from mfn4rec_tf.model import load_model, with_output_mode
    from mfn4rec_tf.run_config import load_config
    from mfn4rec_tf.training import RunError, evaluate_split, modality_names, open_data

    run = Path(args.run)
    try:
        cli.apply_threads(args.threads)
        if not (run / "config.yaml").is_file():
            raise RunError(f"{run} is not a run directory (no config.yaml).")
        config = load_config(run / "config.yaml", cli.boolean_override("train.exclude_history", args.exclude_history))
        dataset = open_data(config)
        names = modality_names(config, dataset)
        split = config.split(dataset, "validation" if args.split == "valid" else "test")
        file = run / ("best.keras" if args.split == "valid" else "model.keras")
        if not file.is_file():
            raise RunError(f"{file} does not exist: the run has not finished that phase (resume it with "
                           f"python -m mfn4rec_tf.fit --out {run} --resume and the same options).")
        model = with_output_mode(load_model(file), "last")
        if args.id_inference_scale is not None:
            from mfn4rec_tf.layers import set_id_inference_scale

            set_id_inference_scale(model, args.id_inference_scale)
        result = evaluate_split(model, config, dataset, split, names, progress=not args.json)
    except cli.USER_ERRORS as error:
        return cli.fail(error)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{config.model.variant}, {config.data.protocol} protocol, {args.split} split:")
        print(format_table(result))
        if format_groups(result):
            print(format_groups(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
