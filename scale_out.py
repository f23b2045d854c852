"""Data-parallel training over the devices of one process or of several, via keras.distribution.

    one process:   python train_vae.py --data-parallel
    P processes:   each runs python train_vae.py --data-parallel --job-addresses HOST:PORT
                   --num-processes P --process-id I (or Keras' environment variables
                   KERAS_DISTRIBUTION_JOB_ADDRESSES, _NUM_PROCESSES, _PROCESS_ID)

Several processes join through `keras.distribution.initialize` (JAX only:
it calls `jax.distributed.initialize`, whose coordinator is the first of the
job addresses). `keras.distribution.DataParallel` then spans every device of
every process: the weights are replicated, each global batch is split over the
devices, and the gradients are summed across them (over JAX's CPU collectives,
gloo, on CPUs; NCCL on GPUs).

Each process feeds only its own share of every global batch
(`auto_shard_dataset=False`: the training stream slices it, see
`ProcessRole.share`); every process draws the same shuffled order from the
run's seed, so the shares never overlap. Process 0 alone writes the run folder.
"""

import dataclasses
import os

import keras

import settings as run_settings

ENVIRONMENT = {"job_addresses": "KERAS_DISTRIBUTION_JOB_ADDRESSES",
               "num_processes": "KERAS_DISTRIBUTION_NUM_PROCESSES",
               "process_id": "KERAS_DISTRIBUTION_PROCESS_ID"}


@dataclasses.dataclass(frozen=True)
class ProcessRole:
    """Which of the run's processes this one is.

    Attributes:
        index: 0 .. count - 1; process 0 coordinates and writes the run folder.
        count: how many processes train together.
        job_addresses: the coordinator's "host:port" (or all jobs', comma-separated).
    """

    index: int = 0
    count: int = 1
    job_addresses: str | None = None

    @property
    def writes_run_folder(self):
        return self.index == 0

    def share(self, batch_length):
        """The slice of a global batch of `batch_length` images that this process feeds.

        Contiguous blocks in process order, which is the order of the devices
        in `keras.distribution.list_devices()`.
        """
        size = batch_length // self.count
        return slice(self.index * size, (self.index + 1) * size)


def process_role(settings, environ=None):
    """This process's `ProcessRole`, from the flags or else Keras' environment variables.

    The environment is read only with --data-parallel, so a variable left set
    in a shell does not turn a plain run into a distributed one.

    Raises:
        SettingsError: if the flags or variables do not describe a valid job.
    """
    environ = os.environ if environ is None else environ
    given = {name: getattr(settings, name) for name in ENVIRONMENT
             if getattr(settings, name) is not None}
    if given and not settings.data_parallel:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise run_settings.SettingsError(f"{flags} only apply to --data-parallel: add "
                                         f"--data-parallel, or drop them")
    if not settings.data_parallel:
        return ProcessRole()
    values = dict(given)
    for name, variable in ENVIRONMENT.items():
        if name not in values and environ.get(variable):
            text = environ[variable]
            try:
                values[name] = text if name == "job_addresses" else int(text)
            except ValueError:
                raise run_settings.SettingsError(
                    f"{variable}={text!r} is not an integer: set it to a whole number") from None
    count, index = values.get("num_processes", 1), values.get("process_id", 0)
    addresses = values.get("job_addresses")
    if count < 1 or not 0 <= index < count:
        raise run_settings.SettingsError(
            f"process id {index} is not one of 0..{count - 1} for {count} processes: give each "
            f"process its own --process-id from 0 to --num-processes - 1")
    if count > 1 and not addresses:
        raise run_settings.SettingsError(
            f"{count} processes need the coordinator's address: give --job-addresses HOST:PORT "
            f"(or set KERAS_DISTRIBUTION_JOB_ADDRESSES), the same in every process")
    return ProcessRole(index, count, addresses)


def start_data_parallel(role, batch_size, train_images):
    """Joins the processes (if several), spreads training over all devices; returns their count.

    Call it before anything runs on a device: JAX joins processes only then.

    Raises:
        SettingsError: under a backend other than JAX, when the processes
            cannot join, when `batch_size` does not split over the devices, or
            when there are fewer training images than one batch (data-parallel
            runs train on whole batches only).
    """
    if keras.backend.backend() != "jax":
        raise run_settings.SettingsError(
            f"--data-parallel needs the JAX backend, not {keras.backend.backend()}: "
            f"run with KERAS_BACKEND=jax")
    if role.count > 1:
        try:
            keras.distribution.initialize(role.job_addresses, role.count, role.index)
        except (RuntimeError, ValueError) as error:  # jax.distributed: unreachable, timed out
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise run_settings.SettingsError(
                f"process {role.index} of {role.count} could not join the job at "
                f"{role.job_addresses} ({first_line[:200]}): start every process with the "
                f"same --job-addresses and --num-processes") from None
    if train_images < batch_size:
        raise run_settings.SettingsError(
            f"--data-parallel trains on whole batches, and --batch-size {batch_size} is more "
            f"than the {train_images:,} training images: lower --batch-size")
    devices = keras.distribution.list_devices()
    if batch_size % len(devices):
        raise run_settings.SettingsError(
            f"--batch-size {batch_size} does not split evenly over {len(devices)} devices: "
            f"give a multiple of {len(devices)}")
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False))
    print(f"data parallel over {len(devices)} devices in {role.count} "
          f"process{'es' if role.count > 1 else ''}"
          + (f" (this is process {role.index})" if role.count > 1 else "")
          + f": {', '.join(devices)}", flush=True)
    return len(devices)


def stop_data_parallel():
    """Ends the distribution, so that process 0 can save the model on its own.

    Saving a model creates throwaway variables (Keras builds a blank optimizer
    to learn which attributes to skip). Under a multi-process distribution
    each new variable is a collective operation that the other processes never
    join, and process 0 would wait for them forever. The trained weights are
    replicated on every device, so each process can read them without help.
    """
    keras.distribution.set_distribution(None)
