"""Adds `nanowhale` to lm-evaluation-harness's model table, so plain `lm_eval --model nanowhale` works.

lm-eval 0.4.x resolves --model against its own table (lm_eval.models.MODEL_MAPPING) or classes imported
before it runs; it reads no plugin entry points. CMake installs this module and `nanowhale-lm-eval.pth`
(one line: `import nanowhale_lm_eval_hook`) at the top of site-packages, so Python runs it at start-up. It
only puts a finder on sys.meta_path and imports nothing: when, and only when, lm-eval builds its model table,
the finder lets that happen and then adds `nanowhale` as a lazy entry ("nanowhale.lm_eval:NanowhaleLM"), so
nanowhale itself is imported only when the model is asked for.
"""

import importlib.machinery
import sys

MODEL_TABLE = "lm_eval.models"
NAME, TARGET = "nanowhale", "nanowhale.lm_eval:NanowhaleLM"


class _AddToModelTable:
    """A meta path finder (importlib.abc is not imported: start-up stays cheap)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != MODEL_TABLE:
            return None
        sys.meta_path.remove(self)  # once: lm-eval's table is built once per process
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        build_table = spec.loader.exec_module

        def build_table_then_add(module):
            build_table(module)
            from lm_eval.api.registry import model_registry

            if NAME not in model_registry:
                model_registry.register(NAME, target=TARGET)

        spec.loader.exec_module = build_table_then_add
        return spec


if not any(isinstance(f, _AddToModelTable) for f in sys.meta_path):
    sys.meta_path.insert(0, _AddToModelTable())
