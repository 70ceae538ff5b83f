"""What the model combo offers: the embedded default model, the model folders in the user's model directory
(``knowledgesam train`` puts them there), and "a model folder" chosen with the path field below it.

Why two steps, as for the devices: listing the user's models goes through ``KnowledgeSAMLib.mrml.list_user_models``,
whose package imports torch (seconds), and the panel must open without it. So the panel opens with
:func:`modelChoices` of no user models (the remembered folder stays in the path field), and :func:`userModels`
fills the combo when the user opens "Model and device" (when the GPUs are listed too) or presses Refresh.
"""

from dataclasses import dataclass

__all__ = ["ModelChoice", "DEFAULT_MODEL_VALUE", "FOLDER_VALUE", "modelChoices", "userModels", "choiceIndex",
           "modelPath"]

DEFAULT_MODEL_VALUE = ""  # the embedded default model
FOLDER_VALUE = "<folder>"  # the folder in the path field


@dataclass(frozen=True)
class ModelChoice:
    label: str  # shown in the combo
    value: str  # DEFAULT_MODEL_VALUE, FOLDER_VALUE, or a model folder's path
    tooltip: str = ""


def _describe(model):
    trained = ", ".join(model.trained_on)
    return ModelChoice("{name} ({preset}, {size} px)".format(name=model.name, preset=model.preset,
                                                            size=model.image_size),
                       str(model.path), "{path}{trained}".format(
                           path=model.path, trained="\nTrained on: " + trained if trained else ""))


def modelChoices(models=(), remembered=None):
    """The embedded default, ``models`` (the user's model folders, :func:`userModels`), a ``remembered`` model
    folder not among them (the choice saved last time, shown before the folders are listed), then "a folder"."""
    choices = [ModelChoice("embedded default model", DEFAULT_MODEL_VALUE, "The model shipped with the extension.")]
    choices += [_describe(model) for model in models]
    if remembered not in (None, DEFAULT_MODEL_VALUE, FOLDER_VALUE) and choiceIndex(choices, remembered) is None:
        import os

        choices.append(ModelChoice("{name} (remembered)".format(name=os.path.basename(os.path.normpath(remembered))),
                                   str(remembered), "{path}\nOpen 'Model and device' to list your models.".format(
                                       path=remembered)))
    choices.append(ModelChoice("model folder below", FOLDER_VALUE, "A model folder anywhere (config.json + "
                                                                   "model.safetensors), chosen in the field below."))
    return choices


def userModels(root=None):
    """The model folders in the user's model directory (imports the model package, and torch with it)."""
    from KnowledgeSAMLib import mrml

    return mrml.list_user_models(root)


def _same(a, b):
    import os

    return os.path.normcase(os.path.normpath(str(a))) == os.path.normcase(os.path.normpath(str(b)))


def choiceIndex(choices, value):
    """The index of the choice for ``value`` (a user model by its path), or None."""
    for index, choice in enumerate(choices):
        if choice.value == value or (value and choice.value not in (DEFAULT_MODEL_VALUE, FOLDER_VALUE)
                                     and _same(choice.value, value)):
            return index
    return None


def modelPath(value, folderText):
    """The model to run for a combo ``value`` and the path field's text: None for the embedded default."""
    if value == FOLDER_VALUE:
        return (folderText or "").strip() or None
    return value or None
