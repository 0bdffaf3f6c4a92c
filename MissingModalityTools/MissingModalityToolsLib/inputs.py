"""Which volumes the user chose, and whether a run can start on them.

Everything the panel shows before Apply comes from here: the slots filled by
name, the availability line, and the problems listed in the Apply button's
tooltip (empty list = Apply enabled). Nothing here writes, launches or adds
anything; ``logic.MissingModalityToolsLogic.start`` refuses to start on the
same problems.

``inputs`` everywhere is a mapping modality key ("flair", "t1", "t1c", "t2")
-> volume node or None (a slot left empty).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from medmodels.errors import InputError
from medmodels.modalities import BY_KEY, MODALITY_KEYS, AvailabilityMask, assign_modalities, check_distinct_sources

from MissingModalityToolsLib import nodes as nodeio


def display_name(key: str) -> str:
    """ "FLAIR", "T1", "T1c" or "T2" for a modality key."""
    return BY_KEY[key].display


def selected_inputs(inputs: Mapping[str, object]) -> dict:
    """The chosen nodes only, in canonical modality order."""
    return {k: inputs[k] for k in MODALITY_KEYS if inputs.get(k) is not None}


def availability(inputs: Mapping[str, object]) -> AvailabilityMask | None:
    """The availability mask of a selection, or None when nothing is selected."""
    chosen = selected_inputs(inputs)
    return AvailabilityMask.from_keys(chosen) if chosen else None


def describe_availability(inputs: Mapping[str, object], options=None) -> str:
    """One line for the panel: which modalities are acquired and what becomes of the rest.

    Args:
        inputs: modality key -> node or None.
        options: the run's RunOptions, or None (then missing ones are said to be synthesised).
    """
    mask = availability(inputs)
    if mask is None:
        return "No volume selected."
    parts = [("\u2713 " if a else "\u2717 ") + display_name(k) for k, a in zip(MODALITY_KEYS, mask)]
    text = "   ".join(parts) + f"   (mask {mask.bits})"
    if mask.missing_keys:
        fate = "will be synthesised" if options is None or options.synthesize else "left out"
        text += f"; {', '.join(display_name(k) for k in mask.missing_keys)} {fate}"
    return text


#: The one node class the modality selectors show. Vector, tensor, DWI and
#: label-map volume nodes subclass it, and the selectors (showChildNodeTypes
#: false) hide them, so auto-assign must not put them in a slot either.
SELECTOR_CLASS = "vtkMRMLScalarVolumeNode"


def assignable_volumes(nodes: Sequence) -> list:
    """The nodes a modality selector can show: exactly scalar volumes, not hidden from editors.

    Args:
        nodes: candidate nodes (e.g. every vtkMRMLScalarVolumeNode of the scene,
            subclasses included).
    """
    return [n for n in nodes if n.GetClassName() == SELECTOR_CLASS and not n.GetHideFromEditors()]


def assign_by_name(volume_nodes: Sequence) -> tuple[dict, list[str]]:
    """Fill the modality slots from node names with medmodels' name registry.

    Returns (modality key -> node, sentences about names that were ambiguous).
    Two nodes with the same name are never guessed between.
    """
    by_name: dict[str, list] = {}
    for node in volume_nodes:
        by_name.setdefault(node.GetName(), []).append(node)
    assignment = assign_modalities(by_name)
    chosen, notes = {}, list(assignment.ambiguities())
    for key, name in assignment.assigned.items():
        if len(by_name[name]) == 1:
            chosen[key] = by_name[name][0]
        else:
            notes.append(f"{len(by_name[name])} volumes are named '{name}'; choose one for {display_name(key)}.")
    return chosen, notes


def assign_slots(current: Mapping[str, object], volume_nodes: Sequence) -> tuple[dict, list[str]]:
    """What "Assign by name" puts in the four slots: names that match fill their slot, the rest stay.

    A slot no name matched keeps the volume the user picked by hand (it is
    never cleared), unless that volume was just assigned to another slot by
    its name (one volume is never in two slots).

    Args:
        current: modality key -> the node in the slot now, or None.
        volume_nodes: the volumes the selectors can show (``assignable_volumes``).

    Returns:
        (modality key -> node or None for all four slots, sentences about ambiguous names).
    """
    chosen, notes = assign_by_name(volume_nodes)
    taken = {id(node) for node in chosen.values()}
    slots = {}
    for key in MODALITY_KEYS:
        kept = current.get(key)
        slots[key] = chosen.get(key) or (kept if kept is not None and id(kept) not in taken else None)
    return slots, notes


def input_problems(inputs: Mapping[str, object], options) -> list[str]:
    """Why the run cannot start, as sentences that each name the fix; empty = it can.

    The panel shows these as the Apply button's tooltip.

    Args:
        inputs: modality key -> node or None.
        options: the run's RunOptions (their own problems come first).
    """
    problems = list(options.problems())
    unknown = sorted(set(inputs) - set(MODALITY_KEYS))
    if unknown:
        problems.append(f"Unknown modality slot(s) {unknown}: use {', '.join(MODALITY_KEYS)}.")
    chosen = selected_inputs(inputs)
    if not chosen:
        problems.append("No volume selected: choose at least one of FLAIR, T1, T1c or T2.")
        return problems
    kinds = {key: node_kind_problem(key, node) for key, node in chosen.items()}
    problems += [p for p in kinds.values() if p]
    nodes = {key: node for key, node in chosen.items() if not kinds[key]}
    problems += duplicate_problems(nodes)
    usable = {}
    for key, node in nodes.items():
        problem = volume_problem(key, node)
        if problem:
            problems.append(problem)
        else:
            usable[key] = node
    problems += overlap_problems(usable)
    if options.synthesize and not options.segment and AvailabilityMask.from_keys(chosen).is_complete:
        problems.append(
            "All four modalities are selected, so there is nothing to synthesise: "
            "tick 'Segment tumour', or leave out a modality to synthesise it."
        )
    return problems


#: What a user calls the node classes a script may pass instead of a volume (first match wins).
NODE_KINDS = (
    ("vtkMRMLModelNode", "a model"),
    ("vtkMRMLSegmentationNode", "a segmentation"),
    ("vtkMRMLTransformNode", "a transform"),
    ("vtkMRMLMarkupsNode", "a markups"),
    ("vtkMRMLVolumeNode", "a volume"),
)


def node_kind_problem(key: str, node) -> str | None:
    """Why ``node`` cannot even be looked at as the ``key`` input (not a node, or not a volume), or None.

    The panel's selectors offer scalar volumes only; a script can pass any
    node, or a file name, and every later check calls volume methods on it.

    Args:
        key: modality key of the slot.
        node: what was given for it.
    """
    role = display_name(key)
    if not all(hasattr(node, m) for m in ("IsA", "GetName", "GetClassName", "GetScene")):
        return (
            f"{role} input '{node}' is a {type(node).__name__}, not a volume node of the scene: load the image "
            "into the scene and pass its node (e.g. slicer.util.getNode('name'))."
        )
    if node.IsA("vtkMRMLScalarVolumeNode"):
        return None
    what = next((words for cls, words in NODE_KINDS if node.IsA(cls)), "a")
    return (
        f"{role} input '{node.GetName()}' is {what} node ({node.GetClassName()}), not a scalar volume: "
        f"choose a scalar volume (an MR image) for {role}."
    )


def removed_input_problem(key: str, node, scene) -> str | None:
    """Why a run's results cannot be loaded with ``node`` (the ``key`` input): it left ``scene`` while the
    worker ran (the outputs go on its grid and beside it in the subject hierarchy); None if it is still there.

    Args:
        key: modality key of the input.
        node: the input's volume node, as the run started with it.
        scene: the scene the results go to.
    """
    if node.GetScene() is scene:
        return None
    return (
        f"The {display_name(key)} volume '{node.GetName()}' was removed from the scene during the run, and the "
        "results are placed on its grid and beside it: nothing was loaded. Load the volume again and rerun."
    )


def duplicate_problems(chosen: Mapping[str, object]) -> list[str]:
    """One sentence per node chosen for two slots, naming the node by its name (not its ID)."""
    try:
        check_distinct_sources({k: n.GetID() or str(id(n)) for k, n in chosen.items()})
    except InputError as e:
        message = str(e)
        for n in chosen.values():
            if n.GetID():
                message = message.replace(f"'{n.GetID()}'", f"'{n.GetName()}'")
        return [message]
    return []


def volume_problem(key: str, node) -> str | None:
    """What makes one chosen node unusable as the ``key`` input (kind, voxels, transform), or None."""
    label = f"{display_name(key)} volume '{node.GetName()}'"
    image = node.GetImageData()
    if not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLLabelMapVolumeNode"):
        return f"{label} is not a scalar MR volume: choose a scalar volume."
    if image is None or min(image.GetDimensions()) < 1 or image.GetNumberOfPoints() == 0:
        return f"{label} has no voxels: load the image again or choose another volume."
    if image.GetNumberOfScalarComponents() != 1:
        return (
            f"{label} has {image.GetNumberOfScalarComponents()} components per voxel: "
            "choose a single-component (grey-scale) volume."
        )
    if node.GetParentTransformNode() is not None:
        return (
            f"{label} is under transform '{node.GetParentTransformNode().GetName()}': "
            "harden the transform first (Data module, right-click, Harden transform), "
            "so the worker sees the volume where the scene shows it."
        )
    return None


def overlap_problems(usable: Mapping[str, object]) -> list[str]:
    """Volumes that do not overlap the reference (first) one in space.

    Grids may differ (medmodels resamples onto the reference input's grid),
    but volumes that do not even overlap cannot be brought together.
    """
    if len(usable) < 2:
        return []
    ref_key = next(iter(usable))
    ref_bounds = nodeio.ras_bounds(usable[ref_key])
    problems = []
    for key, node in list(usable.items())[1:]:
        if not nodeio.bounds_overlap(ref_bounds, nodeio.ras_bounds(node)):
            problems.append(
                f"{display_name(key)} volume '{node.GetName()}' does not overlap the reference "
                f"{display_name(ref_key)} volume '{usable[ref_key].GetName()}' in space, so their grids "
                "cannot be brought together: choose volumes of the same patient and session, "
                "or register them first."
            )
    return problems


def scene_problems(inputs: Mapping[str, object], scene) -> list[str]:
    """Chosen nodes that are not in ``scene`` (the one the results would go to)."""
    return [
        f"Volume '{node.GetName()}' is not in this scene: choose a volume from the scene."
        for node in selected_inputs(inputs).values()
        if hasattr(node, "GetScene") and node.GetScene() is not scene  # not a node: input_problems says so
    ]
