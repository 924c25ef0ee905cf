"""The recipe: one schema per section, TOML reading and writing with file:line errors, the engineer PIN.

Product recipes are TOML files, one per product, loaded into frozen dataclasses and validated.
Switching products means switching recipes, so a recipe must be refused *before* the line runs
on it, with a message a line engineer can act on: the file, the line, the dotted key, the value
found and the value expected, e.g.::

    recipes/demo.toml:23: reject.pulse_ms = -5: expected an integer between 1 and 10000

Hostile files are refused the same way: a binary or non-UTF-8 file, nesting deeper than
:data:`~station.config.keylines.MAX_NESTING`, reject templates that would allocate without
bound, pyserial URLs as ports (:func:`port_problem`), GenTL producers outside the trusted
folders, singular intrinsics and out-of-bounds PIN hashes; tests/config/test_recipe_properties.py
checks with hypothesis that any text gives a Recipe or ``file:line:`` lines, nothing else.

Path fields (``metadata["path"]``) are resolved relative to the recipe's folder and stored as
absolute path strings ("" = not set).

The modules, in the order a recipe passes through them:

- :mod:`~station.config.schema`: the section dataclasses (the only definition of each section);
- :mod:`~station.config.toml_io`: reading the file (size, binary, BOM, TOML syntax);
- :mod:`~station.config.keylines`: which line each key is on;
- :mod:`~station.config.convert`: the generic validator, table -> dataclass;
- :mod:`~station.config.checks`: rules that span several keys;
- :mod:`~station.config.writeback`: :func:`update_recipe` and :func:`set_pin`;
- :mod:`~station.config.pin`: engineer PIN hashing; :mod:`~station.config.errors`: RecipeError.

Other code imports these names from ``station.config``, never from the modules.
"""

from station.config.checks import port_problem
from station.config.errors import RecipeError, RecipeIssue
from station.config.pin import (
    MIN_PIN_LENGTH,
    PIN_ITERATIONS,
    PIN_MAX_ITERATIONS,
    PIN_MIN_ITERATIONS,
    check_pin,
    hash_pin,
    pin_problem,
)
from station.config.schema import (
    SIMULATED_DEFECTS,
    CameraSection,
    DecisionSection,
    EngineerSection,
    ModelsSection,
    MqttSection,
    ProductSection,
    QualitySection,
    Recipe,
    RecordsSection,
    RejectSection,
    ScaleSection,
    SimulatedCamera,
    TriggerSection,
    UndistortSection,
    field_help,
    field_info,
    mqtt_endpoint,
    mqtt_url_problem,
    recipe_to_dict,
)
from station.config.toml_io import list_recipes, load_recipe
from station.config.writeback import set_pin, update_recipe

__all__ = [
    "CameraSection",
    "DecisionSection",
    "EngineerSection",
    "MIN_PIN_LENGTH",
    "ModelsSection",
    "MqttSection",
    "PIN_ITERATIONS",
    "PIN_MAX_ITERATIONS",
    "PIN_MIN_ITERATIONS",
    "ProductSection",
    "QualitySection",
    "Recipe",
    "RecipeError",
    "RecipeIssue",
    "RecordsSection",
    "RejectSection",
    "SIMULATED_DEFECTS",
    "ScaleSection",
    "SimulatedCamera",
    "TriggerSection",
    "UndistortSection",
    "check_pin",
    "field_help",
    "field_info",
    "hash_pin",
    "list_recipes",
    "load_recipe",
    "mqtt_endpoint",
    "mqtt_url_problem",
    "pin_problem",
    "port_problem",
    "recipe_to_dict",
    "set_pin",
    "update_recipe",
]
