"""Query lists used by the selections (data from ../shared/reference/prompts.md); labels live in `labels`."""

from ..labels import CRC_CLASSES

BLADDER_LESION_QUERIES = (
    "What are the distinguishing features of this pathology image?",
    "Can you tell me what lesions are shown in this pathology image?",
    "What are the distinguishing features or abnormalities in this pathological image?",
    "Can you analyze the lesions in this pathological image?",
    "Please describe the features you observed in this pathology image.",
    "Can you describe this pathology image in detail?",
    "Please provide more information about the feature of this pathological image.",
    "Can you describe the salient features in this pathological image?",
    "Please describe the possible lesions in this pathology image.",
    "What features in this pathology image can aid in diagnosis?",
    "Describe this pathology image.",
    "Please describe the primary lesions or abnormalities in this pathology image.",
)
BLADDER_NORMAL_QUERIES = (
    "Can you describe the features in this pathological image?",
    "Describe this pathology image.",
)
# The default recipe draws every bladder query from the union, so the query cannot hint at the label.
BLADDER_ALL_QUERIES = tuple(dict.fromkeys(BLADDER_LESION_QUERIES + BLADDER_NORMAL_QUERIES))

PCAM_CANCER_QUESTIONS = (
    "Does this image contain cancerous cells?",
    "Can you identify cancer cells in this image?",
    "Please tell me if cancer is present in this image.",
    "Are there signs of cancer in this image?",
    "Could you please determine if there are cancer cells in this image?",
    "Is this image depicting malignant cells?",
)
PCAM_PAPER_NEGATIVE_PROMPTS = (
    "Describe the features in this image.",
    "Please provide details about this image.",
)

CRC_QUERY = (
    "Which category does this pathological image belong to? Choose one of the following categories: "
    + ", ".join(f"'{name}'" for name in CRC_CLASSES.values())
)

# The authors' wording, character for character ("images" included): minaa-lab/pathMLLMdata,
# classification/make_classification_chatml_CRC_VAL_HE_7K.py (the text before its `<img>` tag).
CRC_PAPER_QUERY = (
    "Which category does this pathological images belong to? Choose one of the following categories: "
    "'Adipose', 'Background', 'Debris', 'Lymphocytes', 'Mucus', 'Smooth Muscle', 'Normal Colon Mucosa', "
    "'Cancer-Associated Stroma', 'Colorectal Adenocarcinoma Epithelium'"
)

CAPTION_DETAILED = (
    "Describe the following image in detail.",
    "Provide a detailed description of the given image.",
    "Give an elaborate explanation of the image you see.",
    "Share a comprehensive rundown of the presented image.",
    "Offer a thorough analysis of the image.",
    "Explain the various aspects of the image before you.",
    "Clarify the contents of the displayed image with great detail.",
    "Characterize the image using a well-detailed description.",
    "Break down the elements of the image in a detailed manner.",
    "Walk through the important details of the image.",
    "Portray the image with a rich, descriptive narrative.",
    "Narrate the contents of the image with precision.",
    "Analyze the image in a comprehensive and detailed manner.",
    "Illustrate the image through a descriptive explanation.",
    "Examine the image closely and share its details.",
    "Write an exhaustive depiction of the given image.",
)
CAPTION_BRIEF = (
    "Describe the following image concisely.",
    "Provide a brief description of the given image.",
    "Offer a succinct explanation of the picture presented.",
    "Summarize the visual content of the following image.",
    "Give a short and clear explanation of the subsequent image.",
    "Share a concise interpretation of the image provided.",
    "Present a compact description of the photo's key features.",
    "Relay a brief, clear account of the picture shown.",
    "Render a clear and concise summary of the photo below.",
    "Write a terse but informative summary of the following picture.",
    "Create a compact narrative representing the image presented.",
)
