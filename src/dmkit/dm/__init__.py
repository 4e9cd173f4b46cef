"""The device-mapper core: tables, targets, mapped devices."""

from .args import ArgReader, FeatureSet, parse_uint
from .mapped import MappedDevice
from .resolver import DeviceResolver
from .table import TableLine, format_table, join_args, parse_table, split_args
from .target import Target

__all__ = [
    "ArgReader",
    "FeatureSet",
    "parse_uint",
    "MappedDevice",
    "DeviceResolver",
    "TableLine",
    "format_table",
    "join_args",
    "parse_table",
    "split_args",
    "Target",
]
