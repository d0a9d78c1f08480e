"""Search space, encoding, network spec, sampling and the spec's file formats (gpunet's and NVIDIA's JSON)."""

from gpunet.space.encoding import (
    Architecture,
    StageConfig,
    architecture_to_spec,
    canonical_encodings,
    decode,
    encode,
    encoding_to_spec,
    validate,
)
from gpunet.space.formats import (
    RELEASED,
    load_spec,
    released_spec,
    save_spec,
    spec_from_nvidia,
    spec_to_nvidia,
)
from gpunet.space.sampling import sobol_encodings
from gpunet.space.search_space import Digit, SearchSpace, StageSpace, load_space, space_from_config
from gpunet.space.spec import HeadSpec, LayerSpec, NetworkSpec

__all__ = [
    "Architecture", "Digit", "HeadSpec", "LayerSpec", "NetworkSpec", "RELEASED", "SearchSpace",
    "StageConfig", "StageSpace", "architecture_to_spec", "canonical_encodings", "decode", "encode",
    "encoding_to_spec", "load_space", "load_spec", "released_spec", "save_spec", "sobol_encodings",
    "space_from_config", "spec_from_nvidia", "spec_to_nvidia", "validate",
]
