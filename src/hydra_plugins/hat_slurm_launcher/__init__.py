"""``hardware=slurm``'s launcher: Hydra's submitit SLURM launcher, with jobs that say how they ended.

In each job (:meth:`SweepLauncher.__call__`): a job whose training failed (a bad config value, a
missing dataset, a stop that is not requeued, a spent requeue budget) writes its error as the
last line of its own log (``.submitit/*_log.out``) and of its run folder's ``train.log``, and
exits with status 1, so that SLURM's accounting shows it FAILED rather than COMPLETED. Its result
file still holds Hydra's record of the job with the error (replaced by its message where the
error itself cannot be pickled), so the client reads every job's outcome without stopping at the
first failure. A job that SLURM requeues leaves no result (:mod:`hat.engine.slurm_job`): the
client waits for the requeued job.

In the client (:meth:`SweepLauncher.launch`): after every job has ended, one line per job (its
SLURM job id, the overrides that set it apart, how it ended), then one line that sums the sweep
up; when any job failed the client exits with status 1 there, instead of Hydra's traceback of the
first failure.
"""

from __future__ import annotations

import importlib.util
import logging
import pickle
import sys

from hydra.core.utils import JobReturn, JobStatus, filter_overrides

from hat.engine.failures import last_line

log = logging.getLogger(__name__)
EXIT_JOB_FAILED = 1

if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
    from hydra_plugins.hat_missing_extras import MissingSubmititLauncher as SweepLauncher  # noqa: F401
else:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

    class SweepLauncher(SlurmLauncher):
        """Hydra's submitit SLURM launcher whose jobs end with their error and whose client sums up."""

        def __call__(self, *args, **kwargs) -> JobReturn:
            result = super().__call__(*args, **kwargs)
            if result.status is JobStatus.FAILED:
                _fail_job(result)
            return result

        def launch(self, job_overrides, initial_job_idx: int):
            results = super().launch(job_overrides, initial_job_idx)
            shared = set.intersection(*(set(overrides) for overrides in job_overrides))
            ended = []
            for number, (overrides, result) in enumerate(zip(job_overrides, results), start=initial_job_idx):
                own = " ".join(o for o in filter_overrides(overrides) if o not in shared) or "no overrides of its own"
                log.info("#%d (SLURM job %s, %s): %s", number, _job_id(result), own, _outcome(result))
                ended.append(f"#{number} {'finished' if result.status is JobStatus.COMPLETED else 'failed'}")
            summary = f"sweep of {len(results)} jobs: {', '.join(ended)}"
            if any(result.status is not JobStatus.COMPLETED for result in results):
                log.error("%s (each failed job's error is above and at the end of its train.log)", summary)
                sys.exit(EXIT_JOB_FAILED)
            log.info(summary)
            return results


def _fail_job(result: JobReturn):
    """In a job whose task failed: log its error last, save the result, exit 1 (sacct: FAILED)."""
    import submitit
    from submitit.core.utils import cloudpickle_dump, temporary_save_path

    error = result._return_value
    try:
        pickle.dumps(error)
    except Exception:  # an exception that cannot cross to the client: keep its words
        result.return_value = RuntimeError(f"{type(error).__name__}: {last_line(error)}")
    with temporary_save_path(submitit.JobEnvironment().paths.result_pickle) as path:
        cloudpickle_dump(("success", result), path)
    log.error("job failed: %s", last_line(error))
    root = logging.getLogger()
    for handler in root.handlers[:]:  # the job's logs end with that line
        root.removeHandler(handler)
        handler.close()
    sys.exit(EXIT_JOB_FAILED)


def _outcome(result: JobReturn) -> str:
    if result.status is JobStatus.COMPLETED:
        return f"finished, best validation monitor {result._return_value}"
    return f"failed: {last_line(result._return_value)}"


def _job_id(result: JobReturn) -> str:
    return str(result.hydra_cfg.hydra.job.id) if result.hydra_cfg is not None else "?"
