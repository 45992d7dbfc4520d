"""`convert.py finetune` in a process of its own, as the runtime install runs it (no PyTorch), on N CPU devices.

    python tests/finetune_run.py --logical-cpus 2 finetune DATA --artifact A ... (the CLI's arguments)

The CPU is split into logical devices before TensorFlow initializes, which only a fresh process allows.
"""

import sys

sys.modules["torch"] = None  # importlib.util.find_spec("torch") is then None: the runtime install


def main(argv: list[str]) -> None:
    cpus = 1
    if argv[:1] == ["--logical-cpus"]:
        cpus, argv = int(argv[1]), argv[2:]
    if cpus > 1:
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpus)
    from convert_cli.app import run

    run(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
