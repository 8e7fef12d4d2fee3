"""Declaring a node's parameters from its Spec table (panoptic_ros.core.settings.Spec).

Every node of this package declares its parameters with `declare_parameters(node, specs)`:
the descriptor carries the description, the range (FloatingPointRange / IntegerRange), the
accepted values (additional_constraints) and read_only for everything not marked live, so
`ros2 param describe` shows what a value may be. An override outside its Spec stops the
node with the Spec's message (the parameter, its value and what it may be).
"""

from rclpy.exceptions import ParameterException, ParameterUninitializedException
from rclpy.parameter import Parameter
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)


class BadParameter(ParameterException):
    """A parameter override outside its Spec; the message is the Spec's (no name list)."""

    def __init__(self, message, name):
        Exception.__init__(self, message)
        self.name = name


def descriptor(name, spec):
    """The ParameterDescriptor of a Spec."""
    d = ParameterDescriptor(name=name, description=spec.description,
                            read_only=not spec.live)
    if spec.low is not None or spec.high is not None:
        if isinstance(spec.default, float):
            d.floating_point_range = [FloatingPointRange(
                from_value=float(-1e300 if spec.low is None else spec.low),
                to_value=float(1e300 if spec.high is None else spec.high), step=0.0)]
        else:
            d.integer_range = [IntegerRange(
                from_value=int(-2 ** 63 if spec.low is None else spec.low),
                to_value=int(2 ** 63 - 1 if spec.high is None else spec.high), step=1)]
        open_ends = spec.low_open or spec.high_open
        d.additional_constraints = f'in {spec.range_text()}' if open_ends else ''
    if spec.choices is not None:
        d.additional_constraints = 'one of: ' + ', '.join(map(str, spec.choices))
    return d


def _array_type(default):
    if isinstance(default[0], str):
        return Parameter.Type.STRING_ARRAY
    if isinstance(default[0], int):
        return Parameter.Type.INTEGER_ARRAY
    return Parameter.Type.DOUBLE_ARRAY


def declare_parameters(node, specs):
    """Declare every Spec of {name: Spec} on node; returns {name: value}. Raises
    BadParameter with the Spec's message for a bad override."""
    values = {}
    for name, spec in specs.items():
        # rclpy checks a range before any callback runs, with a message that does not name
        # the value: check the override here first (rclpy keeps overrides in this dict)
        override = node._parameter_overrides.get(name)
        if override is not None:
            try:
                spec.check(name, override.value)
            except ValueError as exc:
                raise BadParameter(str(exc), name) from exc
        if isinstance(spec.default, list):   # typed: an empty list from YAML stays valid
            value = node.declare_parameter(name, _array_type(spec.default),
                                           descriptor(name, spec)).value
            values[name] = spec.default if value is None else list(value)
        else:
            values[name] = node.declare_parameter(name, spec.default,
                                                  descriptor(name, spec)).value
    return values


def current_values(node, specs):
    """{name: value} of the declared parameters of specs (a list never set: its default)."""
    values = {}
    for name in specs:
        try:
            values[name] = node.get_parameter(name).value
        except ParameterUninitializedException:   # a typed list nobody set
            values[name] = None
    return {name: specs[name].default if value is None else
            list(value) if isinstance(specs[name].default, list) else value
            for name, value in values.items()}


def settings_validator(node, specs, build):
    """An on-set-parameters callback that accepts a change only when build({name: value})
    (e.g. Settings.from_params) accepts every value with it; the rejection's reason is the
    ValueError's message. rclpy itself refuses read-only parameters before it runs."""
    def validate(changed):
        try:
            build({**current_values(node, specs), **{p.name: p.value for p in changed}})
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)
    return validate


def ros_args(params):
    """`-p name:=value` command-line arguments of {name: value} (lists as YAML flow lists:
    strings quoted, numbers as floats; booleans lower case), for starting a node process."""
    args = []
    for name, value in params.items():
        if isinstance(value, (list, tuple)):
            value = '[' + ', '.join(f'"{v}"' if isinstance(v, str) else repr(float(v))
                                    for v in value) + ']'
        elif isinstance(value, bool):
            value = str(value).lower()
        args += ['-p', f'{name}:={value}']
    return args
