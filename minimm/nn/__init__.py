"""Layer 3: modules that own parameters and call the functional layer."""
from .module import Module, Parameter, Sequential
