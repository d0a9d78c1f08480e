"""Where the project's configs and data live (one place to change for packaging)."""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CONF_DIR = PACKAGE_DIR / "conf"  # the top-level conf/ is a link to it, so it ships with the package
NVIDIA_CONFIGS_DIR = PACKAGE_DIR / "space" / "nvidia_configs"
