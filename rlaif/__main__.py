"""`python -m rlaif`; the guard matters: vLLM starts its workers with spawn."""

from .cli import main

if __name__ == "__main__":
    main()
