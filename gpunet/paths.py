"""Where the project's configs and data live (one place to change for packaging)."""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CONF_DIR = PACKAGE_DIR.parent / "conf"
NVIDIA_CONFIGS_DIR = PACKAGE_DIR / "space" / "nvidia_configs"
