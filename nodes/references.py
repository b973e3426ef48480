"""Several people: StandInReferences gathers two to four reference latents (with strengths and regions) into the one
reference input of Apply Stand-In; StandInRegion draws a still region of the frame; StandInRegionsFromPose finds one
region per person in a pose (control) video."""
import torch
from comfy_api.latest import io

from ..standin_core.regions import POSE_DILATION, POSE_THRESHOLD, people_regions
from .install import FACTORS_KEY, OUTSIDE_KEY, REFERENCES_KEY, REGIONS_KEY

MAX_REFERENCES = 4
REFERENCE_TIP = ("This person's face: the 'reference_latent' output of Encode Stand-In Reference Face. Every "
                 "reference must be prepared the same way (512x512).")
STRENGTH_TIP = "How much this person's face counts, times Apply's strength (1 = as trained, 0 = left out)."
REGION_TIP = ("Optional: where this person is, as a MASK of the video's size (one for every frame, or one per frame). "
              "Video tokens inside it attend to this face only (this pack's own, not in the official code). A "
              "reference without a region, when others have one, counts everywhere.")
OUTSIDE_OPTIONS = {"all references": "all", "none": "none"}


class StandInReferences(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="StandInReferences",
            display_name="Stand-In References (several people)",
            category="Stand-In",
            description=(
                "Several people in one video, the official zero-shot baseline of the Stand-In authors (never "
                "trained for several people): each reference is encoded and run on its own, and every video token "
                "attends to all of them. Nothing ties a face to a person in the frame, so identities can mix. "
                "Connect the output to Apply Stand-In's reference_latent. The reference K/V cache grows with the "
                "number of references (about 0.8 GB each for Wan 14B in bf16)."),
            inputs=[
                io.Latent.Input("reference_1", tooltip=REFERENCE_TIP),
                io.Float.Input("strength_1", default=1.0, min=0.0, max=3.0, step=0.05, tooltip=STRENGTH_TIP),
                io.Mask.Input("region_1", optional=True, tooltip=REGION_TIP),
                io.Latent.Input("reference_2", tooltip=REFERENCE_TIP),
                io.Float.Input("strength_2", default=1.0, min=0.0, max=3.0, step=0.05, tooltip=STRENGTH_TIP),
                io.Mask.Input("region_2", optional=True, tooltip=REGION_TIP),
                io.Latent.Input("reference_3", optional=True, tooltip=REFERENCE_TIP),
                io.Float.Input("strength_3", default=1.0, min=0.0, max=3.0, step=0.05, tooltip=STRENGTH_TIP),
                io.Mask.Input("region_3", optional=True, tooltip=REGION_TIP),
                io.Latent.Input("reference_4", optional=True, tooltip=REFERENCE_TIP),
                io.Float.Input("strength_4", default=1.0, min=0.0, max=3.0, step=0.05, tooltip=STRENGTH_TIP),
                io.Mask.Input("region_4", optional=True, tooltip=REGION_TIP),
                io.Combo.Input("outside_regions", options=list(OUTSIDE_OPTIONS), default="all references",
                               optional=True, tooltip=(
                                   "With regions: what video tokens outside every region attend to. 'all "
                                   "references' (the official several-references behaviour) or 'none' (the "
                                   "base model there).")),
            ],
            outputs=[io.Latent.Output(display_name="references", tooltip=(
                "All references for Apply Stand-In to Wan Model (as a LATENT its samples are the first one)."))],
        )

    @classmethod
    def execute(cls, **kwargs) -> io.NodeOutput:
        references, factors, regions = [], [], []
        for index in range(1, MAX_REFERENCES + 1):
            latent = kwargs.get(f"reference_{index}")
            if latent is None:
                if kwargs.get(f"region_{index}") is not None:
                    raise ValueError(f"region_{index} is connected but reference_{index} is not")
                continue
            if not isinstance(latent, dict) or REFERENCES_KEY in latent:
                raise ValueError(f"reference_{index} must be one reference's LATENT (from Encode Stand-In Reference "
                                 "Face), not another Stand-In References output")
            references.append(latent["samples"])
            factors.append(float(kwargs.get(f"strength_{index}", 1.0)))
            regions.append(kwargs.get(f"region_{index}"))
        if len(references) < 2:
            raise ValueError("Stand-In References needs at least two references (for one person, connect Encode "
                             "Stand-In Reference Face straight to Apply Stand-In)")
        outside = OUTSIDE_OPTIONS[kwargs.get("outside_regions") or "all references"]
        if all(region is None for region in regions):
            regions = None
        return io.NodeOutput({"samples": references[0], REFERENCES_KEY: references, FACTORS_KEY: factors,
                              REGIONS_KEY: regions, OUTSIDE_KEY: outside})



PRESETS = {  # (left, top, right, bottom) as fractions of the frame
    "left half": (0.0, 0.0, 0.5, 1.0), "right half": (0.5, 0.0, 1.0, 1.0),
    "left third": (0.0, 0.0, 1 / 3, 1.0), "middle third": (1 / 3, 0.0, 2 / 3, 1.0),
    "right third": (2 / 3, 0.0, 1.0, 1.0),
    "top half": (0.0, 0.0, 1.0, 0.5), "bottom half": (0.0, 0.5, 1.0, 1.0),
}


class StandInRegion(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="StandInRegion",
            display_name="Stand-In Region (static)",
            category="Stand-In",
            description=(
                "A still region of the frame for one person of Stand-In References: a preset part of the frame or a "
                "box, as a MASK of the video's size that holds for every frame."),
            inputs=[
                io.Int.Input("width", default=832, min=16, max=8192, step=16, tooltip="The video's width in pixels."),
                io.Int.Input("height", default=480, min=16, max=8192, step=16, tooltip="The video's height in pixels."),
                io.Combo.Input("region", options=[*PRESETS, "box"], default="left half",
                               tooltip="A preset part of the frame, or 'box' for the box below."),
                io.Float.Input("box_left", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="box: its left edge, as a fraction of the width."),
                io.Float.Input("box_top", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="box: its top edge, as a fraction of the height."),
                io.Float.Input("box_right", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="box: its right edge, as a fraction of the width."),
                io.Float.Input("box_bottom", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="box: its bottom edge, as a fraction of the height."),
            ],
            outputs=[io.Mask.Output(display_name="region", tooltip="1 inside the region, 0 outside ([1, H, W]).")],
        )

    @classmethod
    def execute(cls, width, height, region, box_left, box_top, box_right, box_bottom) -> io.NodeOutput:
        left, top, right, bottom = PRESETS.get(region, (box_left, box_top, box_right, box_bottom))
        if not (0 <= left < right <= 1 and 0 <= top < bottom <= 1):
            raise ValueError(f"the box must have left < right and top < bottom within 0..1, got ({left}, {top}) to "
                             f"({right}, {bottom})")
        mask = torch.zeros(1, height, width)
        mask[:, round(top * height):round(bottom * height), round(left * width):round(right * width)] = 1.0
        return io.NodeOutput(mask)


class StandInRegionsFromPose(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="StandInRegionsFromPose",
            display_name="Stand-In Regions from Pose Video",
            category="Stand-In",
            description=(
                "One region per person, found in a control video (the pose skeletons of VACE, or other control "
                "frames drawn on one dark background), so no mask needs painting. Per frame: the drawn pixels, "
                "grouped into the given number of people by their x position, person 1 the leftmost; each "
                "person's region is the convex hull of their pixels grown by 'dilation' pixels. Where people touch "
                "or one is missing, the people of the neighbouring frame carry on. Connect region_1, region_2 ... to "
                "the same inputs of Stand-In References (this pack's own, not in the official code)."),
            inputs=[
                io.Image.Input("control_video", tooltip=(
                    "The control frames, e.g. the pose video given to WanVaceToVideo: skeletons (or other drawings) "
                    "on a black or other single dark background, the video's size and length.")),
                io.Int.Input("people", default=2, min=1, max=MAX_REFERENCES, tooltip=(
                    "How many people the video shows: the regions of the people 1 to this many, from the left.")),
                io.Int.Input("dilation", default=POSE_DILATION, min=0, max=512, step=1, tooltip=(
                    "Pixels each person's region reaches past their drawn skeleton. The default covers the head and "
                    "shoulders of a full-body person at 832x480; give more for people nearer the camera.")),
                io.Float.Input("threshold", default=POSE_THRESHOLD, min=0.01, max=0.99, step=0.01, tooltip=(
                    "How far (0..1) a pixel's colour must be from the background colour to count as drawn. Lower "
                    "it for faint drawings, raise it for a noisy video.")),
                io.Int.Input("width", default=0, min=0, max=8192, step=8, optional=True, tooltip=(
                    "The video's width: the regions are found at the control video's own size (dilation in its "
                    "pixels) and then scaled to width x height. 0: the control video's width.")),
                io.Int.Input("height", default=0, min=0, max=8192, step=8, optional=True, tooltip=(
                    "The video's height (see width). 0: the control video's height.")),
            ],
            outputs=[io.Mask.Output(f"region_{index}", display_name=f"region_{index}", tooltip=(
                f"Person {index} from the left, one mask per frame; all 0 (a single frame) when 'people' is "
                f"under {index}.")) for index in range(1, MAX_REFERENCES + 1)],
        )

    @classmethod
    def execute(cls, control_video, people, dilation, threshold, width=0, height=0) -> io.NodeOutput:
        regions = people_regions(control_video, int(people), dilation=float(dilation), threshold=float(threshold))
        size = (height or regions.shape[-2], width or regions.shape[-1])
        if size != tuple(regions.shape[-2:]):
            regions = torch.nn.functional.interpolate(regions, size=size, mode="bilinear").clamp(0, 1)
        empty = torch.zeros(1, *regions.shape[-2:])
        return io.NodeOutput(*regions.unbind(0), *[empty] * (MAX_REFERENCES - int(people)))


NODES = [StandInReferences, StandInRegion, StandInRegionsFromPose]
