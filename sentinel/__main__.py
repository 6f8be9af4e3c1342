"""`python -m sentinel check [PATH]`: the sentinel without the rest of Qflow."""

from sentinel.cli import sentinel_group

if __name__ == "__main__":
    sentinel_group(prog_name="python -m sentinel")
