"""Rules that span several keys (no single field can express them), run after the build.

A rule names the key at fault and, where that key was left at its default, the nearest key
the file does spell out.
"""

from __future__ import annotations

import dataclasses
import re
import string
from pathlib import Path

from station.config.convert import Context
from station.config.errors import Invalid
from station.config.paths import check_exists, resolve_path
from station.config.pin import PIN_MAX_ITERATIONS, PIN_MIN_ITERATIONS, PIN_UNSET_HELP, pin_parts
from station.config.schema import (
    CLASSIFIER_WIDTH_MIN,
    REJECT_MESSAGE_FIELDS,
    Recipe,
    UndistortSection,
    mqtt_url_problem,
    topic_name_problem,
)
from station.config.show import num_text, show_value
from station.vision import pattern


def check_recipe(recipe: Recipe, ctx: Context) -> Recipe:
    """Rules no single field can express; returns the recipe with derived paths resolved."""
    recipe = _check_camera(recipe, ctx)
    _check_undistort(recipe.undistort, ctx)
    _check_localize(recipe, ctx)
    recipe = _check_models(recipe, ctx)
    _check_reject(recipe, ctx)
    _check_plant(recipe, ctx)
    _check_mqtt(recipe, ctx)
    if recipe.quality.enabled and not recipe.quality.reference:
        ctx.error("quality.reference", 'quality.reference = "": expected a reference JSON '
                  "(station calibrate check) because quality.enabled is true", "quality")
    pin = recipe.engineer.pin_hash
    if pin and pin_parts(pin) is None:
        ctx.error("engineer.pin_hash", f"engineer.pin_hash = {show_value(pin)}: expected "
                  '"pbkdf2_sha256$<iterations>$<salt hex>$<hash hex>" (from `station set-pin`, '
                  f"iterations {PIN_MIN_ITERATIONS}..{PIN_MAX_ITERATIONS}, salt 16..64 bytes) "
                  f"or {PIN_UNSET_HELP}")
    return recipe


def _check_camera(recipe: Recipe, ctx: Context) -> Recipe:
    cam = recipe.camera
    if cam.cti:
        from station.sources.genicam import producer_problem  # light: no harvesters import

        try:
            present = Path(cam.cti).is_file()
        except (OSError, ValueError):
            present = True  # producer_problem says what is wrong with it
        problem = producer_problem(cam.cti) if ctx.check_files or present else None
        if problem:
            ctx.error("camera.cti", problem)
    if cam.source in ("folder", "video"):
        kind = "dir" if cam.source == "folder" else "file"
        if not cam.device.strip():
            ctx.error("camera.device", f'camera.device = "": expected the {kind} of the '
                      f"{cam.source} source", "camera.source")
        else:
            try:
                resolved = resolve_path(cam.device, ctx.folder)
                if ctx.check_files:
                    check_exists(resolved, kind)
                recipe = dataclasses.replace(
                    recipe, camera=dataclasses.replace(cam, device=str(resolved)))
            except Invalid as exc:
                ctx.error("camera.device", f"camera.device = {show_value(cam.device)}: expected {exc}")
    elif cam.source == "opencv" and not cam.device.strip():
        ctx.error("camera.device", 'camera.device = "": expected a camera index such as "0" '
                  "or a device path such as /dev/video0")
    return recipe


def _check_undistort(und: UndistortSection, ctx: Context) -> None:
    from station.vision.undistort import intrinsics_problem

    matrix_ok = len(und.camera_matrix) == 3 and all(len(r) == 3 for r in und.camera_matrix)
    if (und.enabled or und.camera_matrix) and not matrix_ok:
        ctx.error("undistort.camera_matrix", f"undistort.camera_matrix = "
                  f"{show_value(und.camera_matrix)}: expected a 3x3 matrix [[fx, 0, cx], [0, fy, cy], "
                  "[0, 0, 1]]" + (" (undistort.enabled is true)" if und.enabled else ""),
                  "undistort")
    elif matrix_ok:
        problem = intrinsics_problem(und.camera_matrix, und.dist_coeffs or (0.0,) * 5)
        if problem and problem.startswith("undistort.camera_matrix"):
            ctx.error("undistort.camera_matrix", f"undistort.camera_matrix = "
                      f"{show_value(und.camera_matrix)}: {problem.split(': ', 1)[1].split('; got')[0]}")
    if (und.enabled or und.dist_coeffs) and len(und.dist_coeffs) not in (4, 5, 8, 12, 14):
        ctx.error("undistort.dist_coeffs", f"undistort.dist_coeffs = {show_value(und.dist_coeffs)}: "
                  "expected a list of 4, 5, 8, 12 or 14 numbers", "undistort")
    if (und.enabled or und.image_size) and (len(und.image_size) != 2
                                            or max(und.image_size) > IMAGE_SIZE_MAX):
        ctx.error("undistort.image_size", f"undistort.image_size = {show_value(und.image_size)}: "
                  f"expected [width, height] in pixels, each at most {IMAGE_SIZE_MAX}",
                  "undistort")


IMAGE_SIZE_MAX = 20000  # px, as camera.width; the remap tables are allocated at this size


ROI_MAX = 100_000  # px; no camera frame is larger


def _check_product_kind(recipe: Recipe, ctx: Context) -> None:
    """A fixed region has no pose to turn and no part crossing a line to trigger on.

    An orientation left at its default is simply not applied to a fixed region; one the file
    spells out is refused, since it cannot do what it says."""
    loc, al = recipe.localize, recipe.align
    if loc.method == "fixed" and recipe.trigger.mode == "free_run":
        ctx.error("trigger.mode", 'trigger.mode = "free_run": expected hardware, serial or '
                  'software, because localize.method = "fixed" (a fixtured part is triggered '
                  "when it is in place; free_run waits for parts crossing a belt)",
                  "localize.method", "trigger")
    table = ctx.data.get("align")
    turn = al.orientation != "none" and isinstance(table, dict) and "orientation" in table
    if turn and loc.method == "fixed":
        ctx.error("align.orientation", f'align.orientation = "{al.orientation}": expected "none", '
                  'because localize.method = "fixed" (a fixed region has no pose to turn)',
                  "localize.method", "align")
    elif turn and al.crop_mode == "region":
        ctx.error("align.orientation", f'align.orientation = "{al.orientation}": expected "none", '
                  'because align.crop_mode = "region" (the region is cropped as it lies)',
                  "align.crop_mode", "align")
    _check_pattern(recipe, ctx)


def _check_pattern(recipe: Recipe, ctx: Context) -> None:
    """A pattern orientation needs the product's pattern, of the one size the station reads."""
    al = recipe.align
    reads = al.orientation in pattern.READS_PATTERN
    if al.pattern and len(al.pattern) != pattern.SIZE:
        ctx.error("align.pattern", f"align.pattern has {len(al.pattern)} values: expected "
                  f"{pattern.SIZE} ({pattern.RINGS} rings of {pattern.ANGLES}), as station "
                  "init-recipe writes it", "align")
    elif reads and not al.pattern:
        ctx.error("align.pattern", f'align.pattern is missing: expected the product\'s pattern '
                  f'because align.orientation = "{al.orientation}" (station init-recipe learns '
                  "it from good images)", line=ctx.line_of("align.orientation"))
    elif reads and not any(al.pattern):
        ctx.error("align.pattern", "align.pattern is all zeros: expected the product's pattern "
                  "(station init-recipe learns it from good images)", "align")


def _check_localize(recipe: Recipe, ctx: Context) -> None:
    """A region with no size, or an area window that admits nothing, inspects nothing."""
    _check_product_kind(recipe, ctx)
    loc = recipe.localize
    if loc.min_area_frac >= loc.max_area_frac:
        ctx.error("localize.min_area_frac", f"localize.min_area_frac = {num_text(loc.min_area_frac)}: "
                  f"expected less than localize.max_area_frac = {num_text(loc.max_area_frac)} "
                  "(no part could be found)", "localize.max_area_frac", "localize")
    x, y, w, h = loc.roi
    shown = f"localize.roi = {show_value(loc.roi)}"
    if any(v > ROI_MAX for v in loc.roi):
        ctx.error("localize.roi", f"{shown}: expected [x, y, w, h] each at most {ROI_MAX}",
                  "localize")
    elif any(loc.roi) and (w <= 0 or h <= 0):
        ctx.error("localize.roi", f"{shown}: expected a width w and height h above 0 "
                  "([0, 0, 0, 0] = the whole frame)", "localize")
    elif any(loc.roi):
        size = recipe_frame_size(recipe)
        if size and (x + w > size[0] or y + h > size[1]):
            ctx.error("localize.roi", f"{shown}: expected a region inside the {size[0]}x"
                      f"{size[1]} frame (x + w <= {size[0]}, y + h <= {size[1]})", "localize")


def recipe_frame_size(recipe: Recipe) -> tuple[int, int] | None:
    """The frame size when the recipe fixes it (simulated camera, undistortion, or a
    requested camera width and height), else None."""
    und = recipe.undistort
    if und.enabled and len(und.image_size) == 2:
        return und.image_size[0], und.image_size[1]
    if recipe.camera.source == "simulated":
        return recipe.camera.simulated.width, recipe.camera.simulated.height
    if recipe.camera.width and recipe.camera.height:
        return recipe.camera.width, recipe.camera.height
    return None


def _check_models(recipe: Recipe, ctx: Context) -> Recipe:
    """A rule must have the models it fuses; a rule left out follows the models configured."""
    models, rule = recipe.models, recipe.decision.rule
    present = [n for n in ("autoencoder", "classifier") if getattr(models, n)]
    decision = ctx.data.get("decision")
    if len(present) == 1 and not (isinstance(decision, dict) and "rule" in decision):
        rule = present[0]  # the default "either" cannot fuse one model: that model decides
        recipe = dataclasses.replace(
            recipe, decision=dataclasses.replace(recipe.decision, rule=rule))
    need = {"autoencoder": ("autoencoder",), "classifier": ("classifier",),
            "both": ("autoencoder", "classifier")}.get(rule, ())
    # A recipe without models is valid (set-up before training); a rule naming a model is not.
    for name in need:
        if not getattr(models, name):
            ctx.error(f"models.{name}", f'models.{name} = "": expected a model file, because '
                      f'decision.rule = "{rule}" uses it', "decision.rule", "models")
    width = models.classifier_width
    if width and width < CLASSIFIER_WIDTH_MIN:
        ctx.error("models.classifier_width", f"models.classifier_width = {num_text(width)}: "
                  f"expected 0 (station train's default) or {CLASSIFIER_WIDTH_MIN} to 1 (narrower "
                  "leaves the first layers under 4 channels)")
    if rule == "either" and len(present) == 1:
        ctx.error("decision.rule", f'decision.rule = "either": expected both models.autoencoder '
                  f"and models.classifier (only models.{present[0]} is set); use decision.rule "
                  f'= "{present[0]}" for one model', f"models.{present[0]}")
    return recipe


REJECT_MESSAGE_SAMPLE = {"part_id": "20260101-120000-000001", "verdict": "FAILSAFE", "seq": 1}
MAX_FORMAT_WIDTH = 64
_SPEC_RE = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(?P<width>\d*)[,_]?(?:\.(?P<prec>\d+))?"
                      r"[bcdeEfFgGnosxX%]?", re.S)
_DEVICE_PORT_RE = re.compile(
    r"/dev/(?:tty[\w.-]*|cu\.[\w.-]+|pts/\d+|rfcomm\d+|serial/[\w.:+@/-]+)"
    r"|COM[1-9]\d{0,2}|\\\\\.\\COM[1-9]\d{0,2}|loop://")


def port_problem(port: str, allow_url_ports: bool = False) -> str | None:
    """Why ``port`` may not be opened as reject.port (the 'expected ...' text), or None.

    pyserial opens URLs as well as devices: spy://...?file= writes a file and socket:// opens
    a network connection, so only serial devices and loop:// pass unless the recipe sets
    reject.allow_url_ports (for tests)."""
    if allow_url_ports or not port:
        return None
    if _DEVICE_PORT_RE.fullmatch(port) and ".." not in port.split("/"):
        return None
    return ("a serial device (/dev/ttyUSB0, /dev/serial/by-id/..., /dev/pts/N, COM3) or "
            "loop://; other pyserial URLs and paths only with reject.allow_url_ports = true "
            "(tests)")


def _check_reject(recipe: Recipe, ctx: Context) -> None:
    rej, trig = recipe.reject, recipe.trigger
    if rej.enabled and rej.output == "serial" and not rej.port.strip():
        ctx.error("reject.port", 'reject.port = "": expected a serial port (e.g. /dev/ttyUSB0, '
                  "COM3, loop://) because reject.enabled is true", "reject.enabled", "reject")
    problem = port_problem(rej.port, rej.allow_url_ports)
    if problem:
        ctx.error("reject.port", f"reject.port = {show_value(rej.port)}: expected {problem}")
    for key in ("message", "ack"):
        problem = _template_problem(getattr(rej, key))
        if problem:
            ctx.error(f"reject.{key}", f"reject.{key} = {show_value(getattr(rej, key))}: expected a "
                      f"template using only {{{'}, {'.join(REJECT_MESSAGE_FIELDS)}}} ({problem})")
        elif key == "message" and rej.mode == "message" and not rej.message:
            ctx.error("reject.message", 'reject.message = "": expected a message because '
                      'reject.mode = "message"', "reject.mode", "reject")
    if trig.mode == "serial" and not rej.port.strip():
        ctx.error("trigger.mode", 'trigger.mode = "serial": expected reject.port to name the '
                  "serial port the trigger arrives on", "trigger")
    if trig.mode == "serial" and not (trig.serial_line or trig.serial_message):
        ctx.error("trigger.serial_message", 'trigger.serial_message = "": expected the trigger '
                  "bytes, or set trigger.serial_line", "trigger.mode", "trigger")


def _check_plant(recipe: Recipe, ctx: Context) -> None:
    """The PLC servers' settings: an endpoint URL, a user with a hash, keys for encryption."""
    ua = recipe.opcua
    if not re.fullmatch(r"opc\.tcp://[^\s/:]+(:\d{1,5})?(/\S*)?", ua.endpoint):
        ctx.error("opcua.endpoint", f"opcua.endpoint = {show_value(ua.endpoint)}: expected "
                  "opc.tcp://HOST:PORT/PATH (e.g. opc.tcp://127.0.0.1:4840/station)")
    if ua.password_hash and pin_parts(ua.password_hash) is None:
        ctx.error("opcua.password_hash", f"opcua.password_hash = {show_value(ua.password_hash)}: "
                  'expected "pbkdf2_sha256$<iterations>$<salt hex>$<hash hex>" (hash_pin())')
    if bool(ua.username) != bool(ua.password_hash):
        key = "opcua.password_hash" if ua.username else "opcua.username"
        ctx.error(key, f"{key} = {show_value(getattr(ua, key.split('.')[1]))}: expected both "
                  "opcua.username and opcua.password_hash, or neither (anonymous)", "opcua")
    if ua.security == "Basic256Sha256":
        for key in ("certificate", "private_key"):
            if not getattr(ua, key):
                ctx.error(f"opcua.{key}", f'opcua.{key} = "": expected a file, because '
                          'opcua.security = "Basic256Sha256"', "opcua.security", "opcua")


def _template_problem(template: str) -> str | None:
    """Why a reject message template cannot be filled safely, or None when it can.

    Checked before formatting: only the known fields, no attribute/index lookups, no nested
    fields in a spec, width and precision at most MAX_FORMAT_WIDTH (``{part_id:>99999999999}``
    would allocate gigabytes); then formatted once with sample values.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        return str(exc)
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in REJECT_MESSAGE_FIELDS:
            return "unknown field {" + name + "}"
        if conversion not in (None, "r", "s", "a"):
            return f"unknown conversion !{conversion}"
        found = _SPEC_RE.fullmatch(spec or "")
        if "{" in (spec or "") or not found:
            return f"format spec {spec!r} not understood"
        for part in ("width", "prec"):
            if found.group(part) and int(found.group(part)) > MAX_FORMAT_WIDTH:
                return f"format width or precision above {MAX_FORMAT_WIDTH} in {{{name}:{spec}}}"
    try:
        template.format(**REJECT_MESSAGE_SAMPLE)
    except (ValueError, IndexError, KeyError, TypeError, OverflowError) as exc:
        return str(exc)
    return None


def _check_mqtt(recipe: Recipe, ctx: Context) -> None:
    """[mqtt]: a broker URL, topic levels MQTT accepts, TLS files only with mqtts://."""
    mq = recipe.mqtt
    problem = mqtt_url_problem(mq.url)
    if problem:
        ctx.error("mqtt.url", f"mqtt.url = {show_value(mq.url)}: expected {problem}")
    for key in ("topic_root", "plant", "line", "station"):
        problem = topic_name_problem(getattr(mq, key))
        if problem:
            ctx.error(f"mqtt.{key}", f"mqtt.{key} = {show_value(getattr(mq, key))}: "
                      f"expected {problem}")
    tls_files = [k for k in ("ca_file", "cert_file", "key_file") if getattr(mq, k)]
    if tls_files and not mq.url.startswith("mqtts://"):
        ctx.error(f"mqtt.{tls_files[0]}", f"mqtt.{tls_files[0]} = "
                  f"{show_value(getattr(mq, tls_files[0]))}: expected mqtt.url to start with "
                  "mqtts:// (TLS) when TLS files are set", "mqtt.url", "mqtt")
    if mq.key_file and not mq.cert_file:
        ctx.error("mqtt.key_file", f"mqtt.key_file = {show_value(mq.key_file)}: expected "
                  "mqtt.cert_file too (the key belongs to a client certificate)")
    if mq.password_file and not mq.username:
        ctx.error("mqtt.password_file", f"mqtt.password_file = {show_value(mq.password_file)}: "
                  "expected mqtt.username too (a password belongs to a user)")
