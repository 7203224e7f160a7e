"""`python -m rlaif.train METHOD CONFIG.yaml`, for `accelerate launch -m rlaif.train ...` on several GPUs or nodes."""

from ..cli import main

if __name__ == "__main__":
    main(["train", *__import__("sys").argv[1:]])
