from .._stub import missing

resize = missing("transforms.functional.resize")
