"""Cases: the fixed images and prompts every engine is run on, loaded from cases/*.yaml."""
from harness.inputs.cases.load import Case, CaseProblem, LoadedCases, load_cases

__all__ = ["Case", "CaseProblem", "LoadedCases", "load_cases"]
