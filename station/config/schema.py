"""The recipe's schema: one frozen dataclass per TOML section, the only definition of each.

Each field's type comes from its annotation; its default, help text and validation metadata
(``min``, ``max``, ``gt``, ``lt``, ``choices``, ``help``, ``path``, ``must_exist``,
``required``, ``nonempty``, ``max_len``, ``wire``, ``multiline``; ``file_only`` marks keys the
GUI must never offer for editing) from :func:`_opt`. Components take their typed section
(the reject scheduler a :class:`RejectSection`, the inspector a :class:`DecisionSection`).
``[localize]`` and ``[align]`` are the parameter dataclasses of :mod:`station.vision`.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from station.config.pin import PIN_UNSET_HELP, pin_parts
from station.decision import Rule
from station.vision.align import AlignParams
from station.vision.localize import LocalizeParams

# The defect kinds the simulated camera renders (station.sim draws them; the recipe names them).
SIMULATED_DEFECTS: tuple[str, ...] = (
    "scratch",
    "chipped_edge",
    "contamination",
    "damaged_thread",
    "bent_tip",
    "broken_tip",
)


def _opt(default: Any, help: str, **meta: Any) -> Any:
    """A recipe field: its default, the help an engineer sees, and its validation metadata."""
    if is_dataclass(default):
        return field(default_factory=lambda: default, metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


# --- sections -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ProductSection:
    name: str = _opt("", "product name shown to the operator and stored with every record",
                     required=True, nonempty=True, max_len=120)
    description: str = _opt("", "free text for the engineer", multiline=True)
    number: int = _opt(0, "recipe number a PLC selects this product by (Modbus/OPC UA); 0 = "
                       "its position (1, 2, ...) in the sorted recipe folder", min=0, max=65535)


@dataclass(frozen=True)
class SimulatedCamera:
    width: int = _opt(960, "frame width (px)", min=64, max=8192)
    height: int = _opt(540, "frame height (px)", min=64, max=8192)
    fps: float = _opt(30.0, "frames per second", gt=0, max=1000)
    speed_px_s: float = _opt(300.0, "belt speed (px per second)", gt=0, max=100000)
    pitch_px: float = _opt(480.0, "distance between parts on the belt (px)", gt=0, max=100000)
    defect_rate: float = _opt(0.2, "share of parts rendered with a defect", min=0, max=1)
    seed: int = _opt(0, "random seed: the same seed gives the same parts", min=0)
    color: bool = _opt(False, "render colour (BGR) frames instead of grey")
    images: str = _opt("", "optional folder of real part photos to carry across the belt",
                       path=True, kind="dir")
    defects: tuple[str, ...] = _opt((), "defect kinds rendered on defective parts (empty = all)",
                                    choices=SIMULATED_DEFECTS)


@dataclass(frozen=True)
class CameraSection:
    source: str = _opt("simulated", "where frames come from",
                       choices=("simulated", "opencv", "video", "folder", "genicam"))
    device: str = _opt("0", "opencv: index ('0' = /dev/video0) or device path; video: file; "
                       "folder: image folder; genicam: camera id ('' = first camera)")
    cti: str = _opt("", "GenTL producer (.cti) for genicam cameras; loaded as native code, so "
                    "only from a folder in GENICAM_GENTL64_PATH or STATION_GENTL_PATH (or the "
                    "genicam wheel's own)", path=True, kind="file", file_only=True)
    backend: str = _opt("any", "OpenCV capture backend",
                        choices=("any", "v4l2", "gstreamer", "ffmpeg"))
    width: int = _opt(0, "requested frame width (px); 0 = driver default", min=0, max=20000)
    height: int = _opt(0, "requested frame height (px); 0 = driver default", min=0, max=20000)
    fps: float = _opt(0.0, "requested frames per second; 0 = driver default", min=0, max=10000)
    exposure_us: float = _opt(0.0, "exposure time (microseconds); 0 = driver default",
                              min=0, max=10_000_000)
    gain_db: float | None = _opt(None, "analogue gain (dB); absent = driver default",
                                 min=0, max=60)
    pixel_format: str = _opt("mono8", "pixel format delivered to the pipeline",
                             choices=("mono8", "bgr8"))
    loop: bool = _opt(True, "video/folder sources: start again at the end")
    simulated: SimulatedCamera = _opt(SimulatedCamera(), "the simulated conveyor")


@dataclass(frozen=True)
class UndistortSection:
    enabled: bool = _opt(False, "undistort frames before anything else")
    camera_matrix: tuple[tuple[float, ...], ...] = _opt(
        (), "3x3 intrinsics [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (station calibrate camera)")
    dist_coeffs: tuple[float, ...] = _opt((), "distortion coefficients (4, 5, 8, 12 or 14)")
    image_size: tuple[int, ...] = _opt((), "[w, h] of the frames the calibration used", min=1)


#: The largest share of labeled defects the classifier may train on: the rest must be enough
#: to choose thresholds with.
DEFECT_TRAIN_SHARE_MAX = 0.9
#: The share of the labeled good images both models learn from when nobody says, for a fixed
#: region (a surface): the development tiles' fused ranking 0.974 -> 0.984 (3-fold CV). A
#: found part keeps them for its thresholds (0): the demo's line rejected a good part with
#: them, none without.
GOOD_TRAIN_SHARE = 0.7


#: The narrowest classifier station train builds (a VGG16 width multiplier): narrower leaves
#: its first layers under 4 channels (training.classifier.vgg.VGGConfig).
CLASSIFIER_WIDTH_MIN = 0.03


@dataclass(frozen=True)
class ModelsSection:
    autoencoder: str = _opt("", "autoencoder ONNX file ('' = none)", path=True, kind="file")
    classifier: str = _opt("", "classifier ONNX file ('' = none)", path=True, kind="file")
    provider: str = _opt("auto", "onnxruntime execution provider",
                         choices=("auto", "cpu", "cuda"))
    threads: int = _opt(0, "inference threads; 0 = automatic", min=0, max=256)
    size: int = _opt(0, "crop width (px) station train makes the autoencoder's crops at "
                     "(its --size default); the station always crops as the models' metadata "
                     "says; 0 = station train's default", min=0, max=4096)
    classifier_size: int = _opt(0, "crop width (px) station train makes the classifier's crops "
                                "at (its --cls-size default); 0 = station train's default",
                                min=0, max=4096)
    defect_train_share: float = _opt(0.0, "share of the labeled defective images station train's "
                                     "classifier trains on (the rest and the labeled good images "
                                     "choose both thresholds); 0 = station train's default, 0.5",
                                     min=0, max=DEFECT_TRAIN_SHARE_MAX)
    good_train_share: float = _opt(-1.0, "share of the labeled good images (those photographed "
                                   "with the defects) station train's models learn from: the "
                                   "autoencoder's bank of good parts and the classifier's good "
                                   "examples; the rest choose the thresholds; 0 = none; -1 = "
                                   "station train's default, 0.7 for a fixed region, 0 for a "
                                   "found part", min=-1, max=DEFECT_TRAIN_SHARE_MAX)
    classifier_members: int = _opt(0, "classifier networks station train averages into one "
                                   "file (its --classifier-members default), each trained in "
                                   "its share of the budget; 0 = station train's default, 2",
                                   min=0, max=16)
    classifier_width: float = _opt(0.0, "the classifier networks' width multiplier (its --width "
                                   "default; 1 = VGG16 proper); 0 = station train's default, "
                                   "0.125", min=0, max=1)
    flips: str = _opt("none", "mirror images of a good part that are good parts too (a surface, "
                      "a symmetric part): station train's classifier trains on them and the "
                      "model file averages its score over them; 'none' for a part with a "
                      "handedness", choices=("none", "horizontal", "vertical", "both"))


#: The largest recipe threshold on each model's normalized scale: the autoencoder's is raw /
#: threshold, the classifier's an odds ratio (station.models.scoring), where loosening a
#: threshold of p = 0.02 to p = 0.96 is already 1,176.
AUTOENCODER_THRESHOLD_MAX = 1000.0
CLASSIFIER_THRESHOLD_MAX = 1e6
#: The recipe's sum threshold (rule sum) either way of the one chosen at training, in evidence
#: units (a model's spread over good parts: a few units already separate good from defective).
SUM_THRESHOLD_MAX = 100.0


@dataclass(frozen=True)
class DecisionSection:
    """The decision: fusion rule and thresholds on normalized scores (1.0 = model threshold).

    The inspector judges with it, and the engineer changes it live (``Engine.set_decision``).
    """

    rule: str = _opt("either", "either model rejects / both must / only one model decides / "
                     "sum: the two models' evidence added (each in units of its spread over "
                     "good parts) reaches sum_threshold; left out: either with two models, "
                     "the one model's name with one", choices=tuple(r.value for r in Rule))
    autoencoder_threshold: float = _opt(
        1.0, "reject above this normalized score (1.0 = the model's own threshold)",
        gt=0, max=AUTOENCODER_THRESHOLD_MAX)
    classifier_threshold: float = _opt(
        1.0, "reject above this normalized score (1.0 = the model's own threshold; an odds "
        "ratio, so a looser line can need thousands)", gt=0, max=CLASSIFIER_THRESHOLD_MAX)
    sum_threshold: float = _opt(
        0.0, "rule sum: reject when the two models' evidence adds up to this (0 = the sum "
        "station train chose, which the model files carry; higher = looser)",
        min=-SUM_THRESHOLD_MAX, max=SUM_THRESHOLD_MAX)
    on_error: str = _opt("reject", "verdict when a part cannot be inspected",
                         choices=("reject", "pass"))

    @property
    def ae_threshold(self) -> float:
        """Short name of ``autoencoder_threshold``, as the inspector, engine and window use it."""
        return self.autoencoder_threshold

    @property
    def cls_threshold(self) -> float:
        """Short name of ``classifier_threshold``."""
        return self.classifier_threshold


@dataclass(frozen=True)
class TriggerSection:
    mode: str = _opt("free_run", "what starts an inspection: free_run = a part crossing the "
                     "line; serial = a sensor on the serial link; software = the operator's "
                     "button; hardware = every frame is a part (triggered camera, photo folder); plc = the PLC's "
                     "Trigger (Modbus coil or OPC UA method) inspects the latest frame",
                     choices=("free_run", "serial", "software", "hardware", "plc"))
    # strictly inside (0, 1), as FreeRunTrigger requires; "max" only bounds the GUI's editor
    line_frac: float = _opt(0.5, "where the crossing line sits across the ROI (between 0 and "
                            "1, both excluded)", gt=0, lt=1, max=1)
    direction: str = _opt("left_to_right", "direction parts travel in the image",
                          choices=("left_to_right", "right_to_left",
                                   "top_to_bottom", "bottom_to_top"))
    serial_message: str = _opt("TRIG\n", "bytes that mean 'part here' on the serial link",
                               wire=True)
    serial_line: str = _opt("", "modem input line used as trigger ('' = bytes)",
                            choices=("", "CTS", "DSR", "CD", "RI"))
    debounce_ms: float = _opt(20.0, "ignore triggers closer than this (ms)", min=0, max=10000)


REJECT_MESSAGE_FIELDS = ("part_id", "verdict", "seq")


@dataclass(frozen=True)
class RejectSection:
    """The reject output: the scheduler (:class:`station.reject.RejectScheduler`) and the
    serial link take this section as it is; the loader has checked every rule they rely on."""

    enabled: bool = _opt(False, "drive the reject output")
    output: str = _opt("serial", "where the reject goes: serial = the serial port (line pulse "
                       "or message); plc = the PLC interface's Reject bit, held pulse_ms",
                       choices=("serial", "plc"))
    port: str = _opt("", "serial port: a device (/dev/ttyUSB0, /dev/serial/by-id/..., COM3, "
                     "a /dev/pts pty) or loop:// (nothing wired); the serial trigger uses it too")
    allow_url_ports: bool = _opt(False, "tests only: let reject.port be any pyserial URL "
                                 "(socket://, spy://, rfc2217://) or non-device path; never on "
                                 "a line: such URLs open network connections or write files",
                                 file_only=True)
    baudrate: int = _opt(115200, "serial speed (baud)", min=50, max=4_000_000)
    mode: str = _opt("line", "pulse a modem line, or send a byte message",
                     choices=("line", "message"))
    line: str = _opt("DTR", "modem line pulsed in line mode", choices=("DTR", "RTS"))
    message: str = _opt("REJECT {part_id}\n",
                        "message template; fields {part_id}, {verdict}, {seq}", wire=True)
    ack: str = _opt("", "expected acknowledgement ('' = none)", wire=True)
    ack_timeout_ms: int = _opt(200, "how long to wait for the acknowledgement (ms)",
                               min=1, max=10000)
    delay_mode: str = _opt("time", "fire after a delay in ms, or after N further parts",
                           choices=("time", "count"))
    delay_ms: float = _opt(500.0, "trigger-to-reject delay (ms), delay_mode = time",
                           min=0, max=600000)
    delay_parts: int = _opt(3, "parts between camera and reject point, delay_mode = count",
                            min=1, max=10000)
    pulse_ms: int = _opt(50, "pulse width (ms)", min=1, max=10000)
    fail_safe: str = _opt("reject", "action when no verdict is ready in time",
                          choices=("reject", "pass"))
    heartbeat_s: float = _opt(0.0, "heartbeat period (s); 0 = off", min=0, max=3600)
    heartbeat_message: str = _opt("HB\n", "heartbeat bytes", wire=True)


@dataclass(frozen=True)
class RecordsSection:
    database: str = _opt("records/records.sqlite", "SQLite database (created if missing)",
                         path=True, must_exist=False)
    images_dir: str = _opt("records/images", "folder for reject (and sampled pass) images",
                           path=True, must_exist=False, kind="dir")
    save_rejects: bool = _opt(True, "store the image of every reject")
    pass_sample_rate: float = _opt(0.01, "share of passes whose image is stored", min=0, max=1)
    disk_budget_mb: int = _opt(2000, "image store size limit (MB); oldest go first",
                               min=1, max=10_000_000)
    min_free_mb: float = _opt(100.0, "free disk space (MB) record images never use: it is "
                              "kept for the rows", min=0, max=1_000_000)


@dataclass(frozen=True)
class QualitySection:
    enabled: bool = _opt(False, "check focus, brightness, contrast and glare")
    reference: str = _opt("", "quality reference JSON (station calibrate check)",
                          path=True, kind="file")
    interval_s: float = _opt(60.0, "seconds between checks; 0 = at start-up only",
                             min=0, max=86400)
    focus_drop: float = _opt(0.5, "alarm when focus falls by this fraction", min=0, max=1)
    brightness_shift: float = _opt(30.0, "alarm when brightness moves by this many grey levels",
                                   min=0, max=255)
    contrast_drop: float = _opt(0.4, "alarm when contrast falls by this fraction", min=0, max=1)
    glare_frac: float = _opt(0.02, "alarm when saturated pixels grow by this share",
                             min=0, max=1)


@dataclass(frozen=True)
class ScaleSection:
    mm_per_px: float = _opt(0.0, "millimetres per pixel; 0 = unknown", min=0, max=1000)


@dataclass(frozen=True)
class EngineerSection:
    pin_hash: str = _opt("", "engineer PIN hash 'pbkdf2_sha256$iterations$salt$hash' (from "
                         "`station set-pin --recipe R` or hash_pin()); " + PIN_UNSET_HELP,
                         file_only=True)

    @property
    def pin_set(self) -> bool:
        """A PIN hash is stored: engineer mode opens for whoever enters that PIN."""
        return pin_parts(self.pin_hash) is not None

    @property
    def locked(self) -> bool:
        """No PIN is set: engineer mode cannot be entered from the screen at all (someone with
        file access sets a PIN with `station set-pin`; the first person at the screen cannot)."""
        return not self.pin_set

    @property
    def pin_required(self) -> bool:
        """Kept for callers written before ``locked``: True when a PIN is stored."""
        return self.pin_set


MQTT_SCHEMES = {"mqtt": 1883, "mqtts": 8883}
_TOPIC_BAD = frozenset("/+#")


def mqtt_endpoint(url: str) -> tuple[bool, str, int]:
    """``(tls, host, port)`` of a broker URL ``mqtt[s]://host[:port]``; ValueError with the
    'expected' text when it is not one. The recipe check and the ``--mqtt`` flag use it."""
    scheme, sep, rest = url.partition("://")
    host, colon, port = rest.partition(":")
    if (not sep or scheme not in MQTT_SCHEMES or not host or ":" in port
            or any(ch in rest for ch in "/@?#[] ") or any(ord(ch) < 0x21 for ch in rest)):
        raise ValueError("mqtt://host[:port] or mqtts://host[:port] (TLS)")
    if colon and not (port.isdigit() and len(port) <= 5 and 1 <= int(port) <= 65535):
        raise ValueError("a port between 1 and 65535 after the host")
    return scheme == "mqtts", host, int(port) if colon else MQTT_SCHEMES[scheme]


def mqtt_url_problem(url: str) -> str | None:
    """Why ``url`` is not a broker URL (the 'expected ...' text), or None."""
    try:
        mqtt_endpoint(url)
    except ValueError as exc:
        return str(exc)
    return None


def topic_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be one level of an MQTT topic, or None."""
    bad = next((ch for ch in name if ch in _TOPIC_BAD or ord(ch) < 0x20), None)
    return None if bad is None else f"a topic level without / + # (this one holds {bad!r})"


@dataclass(frozen=True)
class MqttSection:
    """Results, status and alarms on MQTT (station.plant.mqtt): topics
    ``<topic_root>/<plant>/<line>/<station>/{result,status,alarm}``."""

    enabled: bool = _opt(False, "publish results, status and alarms to an MQTT broker")
    url: str = _opt("mqtt://127.0.0.1:1883", "broker: mqtt://host[:port], or mqtts://host[:port] "
                    "for TLS (ca_file, cert_file, key_file)", max_len=512)
    topic_root: str = _opt("station", "first level of every topic", nonempty=True, max_len=64)
    plant: str = _opt("plant", "plant name (a topic level)", nonempty=True, max_len=64)
    line: str = _opt("line", "line name (a topic level)", nonempty=True, max_len=64)
    station: str = _opt("", "station name (a topic level); '' = this computer's host name",
                        max_len=64)
    username: str = _opt("", "broker user name ('' = anonymous)", max_len=256)
    password_file: str = _opt("", "file holding the broker password on its first line (the "
                              "recipe never holds the password)", path=True, kind="file",
                              file_only=True)
    ca_file: str = _opt("", "TLS: CA certificate (PEM) the broker's certificate is checked "
                        "against ('' = the system's)", path=True, kind="file")
    cert_file: str = _opt("", "TLS: client certificate (PEM), when the broker asks for one",
                          path=True, kind="file")
    key_file: str = _opt("", "TLS: the client certificate's private key (PEM)", path=True,
                         kind="file", file_only=True)
    qos: int = _opt(1, "MQTT quality of service of results and alarms: 1 = at least once "
                    "(a message leaves the buffer once the broker acknowledged it), 2 = "
                    "exactly once to the broker", min=1, max=2)
    buffer_dir: str = _opt("", "folder of the on-disk buffer of messages waiting for the "
                           "broker ('' = mqtt-outbox beside the records database)",
                           path=True, must_exist=False, kind="dir")
    buffer_max_messages: int = _opt(10000, "messages the buffer holds; when full, the oldest "
                                    "results are dropped (counted, alarmed)", min=10,
                                    max=1_000_000)
    status_interval_s: float = _opt(5.0, "seconds between retained status messages (also "
                                    "sent on every change)", gt=0, max=3600)
    keepalive_s: int = _opt(5, "MQTT keepalive (s): how fast the broker notices a dead "
                            "station and publishes its last will", min=1, max=3600)


@dataclass(frozen=True)
class OpcuaSection:
    """The OPC UA server a PLC or MES talks to (station.plant): off unless enabled."""

    enabled: bool = _opt(False, "serve the station over OPC UA")
    endpoint: str = _opt("opc.tcp://127.0.0.1:4840/station", "the server's endpoint URL; "
                         "127.0.0.1 = this machine only; name an interface to open it to the "
                         "plant network", max_len=300)
    security: str = _opt("none", "none = anonymous, no encryption (loopback); Basic256Sha256 = "
                         "signed and encrypted with certificate and private_key",
                         choices=("none", "Basic256Sha256"))
    certificate: str = _opt("", "the server's certificate (DER or PEM) for Basic256Sha256",
                            path=True, kind="file")
    private_key: str = _opt("", "the server's private key (PEM) for Basic256Sha256",
                            path=True, kind="file", file_only=True)
    username: str = _opt("", "user a client must log in as ('' = anonymous access)",
                         max_len=120)
    password_hash: str = _opt("", "the user's password hash 'pbkdf2_sha256$iterations$salt$hash' "
                              "(hash_pin()); never the password itself", file_only=True)


@dataclass(frozen=True)
class ModbusSection:
    """The Modbus TCP server for PLCs that only do Modbus (station.plant): off unless enabled."""

    enabled: bool = _opt(False, "serve the PLC handshake over Modbus TCP")
    host: str = _opt("127.0.0.1", "address to listen on; 127.0.0.1 = this machine only; name an "
                     "interface's address (or 0.0.0.0) to open it to the plant network",
                     nonempty=True, max_len=253)
    port: int = _opt(5020, "TCP port (502 is the standard one but needs root)", min=1,
                     max=65535)
    unit: int = _opt(1, "Modbus unit (slave) id the station answers", min=1, max=247)


@dataclass(frozen=True)
class Recipe:
    """A whole product recipe. ``path`` is the file it was read from (absolute)."""

    product: ProductSection = _opt(ProductSection(), "the product", required=True)
    camera: CameraSection = _opt(CameraSection(), "camera source and settings")
    undistort: UndistortSection = _opt(UndistortSection(), "lens undistortion")
    localize: LocalizeParams = _opt(LocalizeParams(), "finding the part in the frame")
    align: AlignParams = _opt(AlignParams(), "canonical pose and crop")
    models: ModelsSection = _opt(ModelsSection(), "model files and inference")
    decision: DecisionSection = _opt(DecisionSection(), "thresholds and fusion rule")
    trigger: TriggerSection = _opt(TriggerSection(), "what starts an inspection")
    reject: RejectSection = _opt(RejectSection(), "reject output")
    records: RecordsSection = _opt(RecordsSection(), "records and image store")
    quality: QualitySection = _opt(QualitySection(), "image-quality checks")
    scale: ScaleSection = _opt(ScaleSection(), "pixel scale")
    engineer: EngineerSection = _opt(EngineerSection(), "engineer mode")
    opcua: OpcuaSection = _opt(OpcuaSection(), "OPC UA server for the PLC and MES")
    modbus: ModbusSection = _opt(ModbusSection(), "Modbus TCP server for the PLC")
    mqtt: MqttSection = _opt(MqttSection(), "results, status and alarms on MQTT")
    path: Path = field(default=Path("recipe.toml"), metadata={"internal": True})

    @property
    def folder(self) -> Path:
        """The recipe's folder: relative paths in the recipe are relative to it."""
        return self.path.parent


# --- introspection: the schema as data, for tooltips, editors and write-back ---------------

def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain TOML-able data (tables -> dicts, tuples -> lists, None left out)."""

    def convert(obj: Any) -> Any:
        if is_dataclass(obj):
            return {f.name: convert(getattr(obj, f.name)) for f in fields(obj)
                    if not f.metadata.get("internal") and getattr(obj, f.name) is not None}
        if isinstance(obj, tuple | list):
            return [convert(v) for v in obj]
        if isinstance(obj, Path):
            return str(obj)
        return obj

    return convert(recipe)


def field_info(dotted: str) -> tuple[Any, dict[str, Any]]:
    """The type annotation and validation metadata of a recipe key (``"reject.pulse_ms"``).

    One walk over the section dataclasses, for tooltips and the engineer's editors alike.
    """
    cls: Any = Recipe
    tp: Any = None
    meta: dict[str, Any] = {}
    for part in dotted.split("."):
        found = {f.name: f for f in fields(cls)}.get(part) if is_dataclass(cls) else None
        if found is None:
            raise KeyError(dotted)
        meta = dict(found.metadata)
        tp = typing.get_type_hints(cls)[part]
        cls = tp
    return tp, meta


def field_help(dotted: str) -> str:
    """The help text of a recipe key (e.g. ``"reject.pulse_ms"``), for tooltips."""
    return str(field_info(dotted)[1].get("help", ""))
