"""`python tests/kill_after_checkpoint.py N jepa-args...`: runs `jepa jepa-args...` and SIGKILLs the process as soon
as step N's checkpoint is on disk: a hard crash at a known point, injected from outside the training code."""
import os
import signal
import sys

from jepa.train import checkpoint


def main() -> int:
    kill_at = int(sys.argv[1])
    save = checkpoint.Checkpointer.save

    def save_then_die(self, step, *args, **kwargs):
        saved = save(self, step, *args, **kwargs)
        if step == kill_at:
            self.wait()
            os.kill(os.getpid(), signal.SIGKILL)
        return saved

    checkpoint.Checkpointer.save = save_then_die
    from jepa.cli import main as jepa

    return jepa(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
