"""Offline stand-ins for the Hub datasets the recipes name: the real column names, feature types, label names and
split names (from each dataset card), filled with real images from scikit-learn and scikit-image, a few per class.

Written as Hub-like parquet repos (data/<split>-*.parquet + README with dataset_info), which `load_dataset` reads
exactly as it reads the Hub repo. A recipe whose dataset drifts from its card fails its test here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

BEANS = ["angular_leaf_spot", "bean_rust", "healthy"]
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# uoft-cs/cifar100 card: note "cra" (not "crab") at 26, as the card has it.
CIFAR100_FINE = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "cra", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest",
    "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard",
    "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
    "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum",
    "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper",
    "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf",
    "woman", "worm",
]
CIFAR100_COARSE = [
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables", "household_electrical_devices",
    "household_furniture", "insects", "large_carnivores", "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes", "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates",
    "people", "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
]
FOOD101 = [
    "apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio", "beef_tartare", "beet_salad", "beignets", "bibimbap",
    "bread_pudding", "breakfast_burrito", "bruschetta", "caesar_salad", "cannoli", "caprese_salad", "carrot_cake",
    "ceviche", "cheesecake", "cheese_plate", "chicken_curry", "chicken_quesadilla", "chicken_wings", "chocolate_cake",
    "chocolate_mousse", "churros", "clam_chowder", "club_sandwich", "crab_cakes", "creme_brulee", "croque_madame",
    "cup_cakes", "deviled_eggs", "donuts", "dumplings", "edamame", "eggs_benedict", "escargots", "falafel",
    "filet_mignon", "fish_and_chips", "foie_gras", "french_fries", "french_onion_soup", "french_toast",
    "fried_calamari", "fried_rice", "frozen_yogurt", "garlic_bread", "gnocchi", "greek_salad",
    "grilled_cheese_sandwich", "grilled_salmon", "guacamole", "gyoza", "hamburger", "hot_and_sour_soup", "hot_dog",
    "huevos_rancheros", "hummus", "ice_cream", "lasagna", "lobster_bisque", "lobster_roll_sandwich",
    "macaroni_and_cheese", "macarons", "miso_soup", "mussels", "nachos", "omelette", "onion_rings", "oysters",
    "pad_thai", "paella", "pancakes", "panna_cotta", "peking_duck", "pho", "pizza", "pork_chop", "poutine",
    "prime_rib", "pulled_pork_sandwich", "ramen", "ravioli", "red_velvet_cake", "risotto", "samosa", "sashimi",
    "scallops", "seaweed_salad", "shrimp_and_grits", "spaghetti_bolognese", "spaghetti_carbonara", "spring_rolls",
    "steak", "strawberry_shortcake", "sushi", "tacos", "takoyaki", "tiramisu", "tuna_tartare", "waffles",
]
# pcuenq/oxford-pets stores the breed as a plain string. Its card shows no values; these are the names that models
# trained on it report (cats capitalised, dogs lower case, spaces): not confirmed from the dataset itself.
PETS = [
    "Abyssinian", "american bulldog", "american pit bull terrier", "basset hound", "beagle", "Bengal", "Birman",
    "Bombay", "boxer", "British Shorthair", "chihuahua", "Egyptian Mau", "english cocker spaniel", "english setter",
    "german shorthaired", "great pyrenees", "havanese", "japanese chin", "keeshond", "leonberger", "Maine Coon",
    "miniature pinscher", "newfoundland", "Persian", "pomeranian", "pug", "Ragdoll", "Russian Blue", "saint bernard",
    "samoyed", "scottish terrier", "shiba inu", "Siamese", "Sphynx", "staffordshire bull terrier", "wheaten terrier",
    "yorkshire terrier",
]
# nelorth/oxford-flowers: ClassLabel names are the class numbers 1..102 as strings, in string order ('1', '10', '100').
FLOWERS = sorted(str(i) for i in range(1, 103))
# blanchon/EuroSAT_RGB (as its duplicates' cards show it): names with spaces.
EUROSAT = ["Annual Crop", "Forest", "Herbaceous Vegetation", "Highway", "Industrial Buildings", "Pasture",
           "Permanent Crop", "Residential Buildings", "River", "SeaLake"]


# danjacobellis/chestmnist_224 (MedMNIST+ ChestMNIST): 14 unnamed 0/1 flags per image, in MedMNIST's order.
CHESTMNIST = ["atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia", "pneumothorax",
              "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia"]


@dataclass
class Standin:
    """One Hub dataset's schema: columns (name -> kind), the label column and its names, and rows per class per split.

    Column kinds: "image", "classlabel" (the label), "string_label" (the label as a plain string), "string", "bool",
    ("classlabel", names) for a second ClassLabel column (CIFAR-100's coarse_label), or "flags" (multi-label: a
    sequence of uint8 0/1 flags, one per label, the class's own flag set; every third row of a class also has
    none set, a "no finding" image).
    """

    hub_id: str
    columns: dict
    label_column: str
    labels: list[str]
    splits: dict[str, int]  # split -> rows per class
    eval_classes: int | None = None  # eval splits cover only the first N classes (keeps 100-class sets small)
    train_split: str = "train"
    extra: dict = field(default_factory=dict)


STANDINS: dict[str, Standin] = {
    "beans/vit-base.yaml": Standin(
        "AI-Lab-Makerere/beans", {"image_file_path": "string", "image": "image", "labels": "classlabel"}, "labels",
        BEANS, {"train": 4, "validation": 2, "test": 2}),
    "cifar10/vit-base.yaml": Standin(
        "uoft-cs/cifar10", {"img": "image", "label": "classlabel"}, "label", CIFAR10, {"train": 3, "test": 1}),
    "cifar10/vit-small.yaml": Standin(
        "uoft-cs/cifar10", {"img": "image", "label": "classlabel"}, "label", CIFAR10, {"train": 3, "test": 1}),
    "cifar10/vit-vs-cnn.yaml": Standin(
        "uoft-cs/cifar10", {"img": "image", "label": "classlabel"}, "label", CIFAR10, {"train": 3, "test": 1}),
    "cifar100/vit-base.yaml": Standin(
        "uoft-cs/cifar100",
        {"img": "image", "fine_label": "classlabel", "coarse_label": ("classlabel", CIFAR100_COARSE)},
        "fine_label", CIFAR100_FINE, {"train": 1, "test": 1}, eval_classes=20),
    "food101/vit-base.yaml": Standin(
        "ethz/food101", {"image": "image", "label": "classlabel"}, "label", FOOD101, {"train": 1, "validation": 1},
        eval_classes=20),
    "food101/vit-base-lora.yaml": Standin(
        "ethz/food101", {"image": "image", "label": "classlabel"}, "label", FOOD101, {"train": 1, "validation": 1},
        eval_classes=20),
    "oxford-pets/vit-base.yaml": Standin(
        "pcuenq/oxford-pets", {"path": "string", "label": "string_label", "dog": "bool", "image": "image"}, "label",
        PETS, {"train": 5}),
    "oxford-flowers/vit-base.yaml": Standin(
        "nelorth/oxford-flowers", {"image": "image", "label": "classlabel"}, "label", FLOWERS,
        {"train": 1, "test": 1}, eval_classes=20),
    "chestmnist/vit-base.yaml": Standin(
        "danjacobellis/chestmnist_224", {"path": "string", "label": "flags", "image": "image"}, "label", CHESTMNIST,
        {"train": 3, "validation": 3}),
    "eurosat/vit-base.yaml": Standin(
        "blanchon/EuroSAT_RGB", {"image": "image", "label": "classlabel", "filename": "string"}, "label", EUROSAT,
        {"train": 3, "test": 1, "validation": 1}),
}


def image_pool():
    """Real RGB images: crops of scikit-image photos and scikit-learn digits, cycled through by the builders."""
    from tests.conftest import digits, photos

    return [im.convert("RGB") for im, _ in photos(n_per_class=6, size=40)] + [
        im.convert("RGB") for im, _ in digits(n_per_class=2)]


def features_of(standin: Standin):
    """The `datasets.Features` of the real dataset, in its column order."""
    import datasets

    features = {}
    for name, kind in standin.columns.items():
        if kind == "image":
            features[name] = datasets.Image()
        elif kind == "classlabel":
            features[name] = datasets.ClassLabel(names=standin.labels)
        elif isinstance(kind, tuple):
            features[name] = datasets.ClassLabel(names=kind[1])
        elif kind in ("string", "string_label"):
            features[name] = datasets.Value("string")
        elif kind == "bool":
            features[name] = datasets.Value("bool")
        elif kind == "flags":
            features[name] = datasets.List(datasets.Value("uint8"))
        else:
            raise ValueError(kind)
    return datasets.Features(features)


def build(standin: Standin, root: Path, rename: dict[str, str] | None = None) -> Path:
    """Write the stand-in as a Hub-like parquet repo under `root` (`rename` maps columns, to simulate drift)."""
    import datasets

    from tests.conftest import write_parquet_repo

    pool = image_pool()
    features = features_of(standin)
    splits, counter = {}, 0
    for split, per_class in standin.splits.items():
        classes = len(standin.labels)
        if split != standin.train_split and standin.eval_classes:
            classes = standin.eval_classes
        rows: dict[str, list] = {name: [] for name in standin.columns}
        for c in range(classes):
            for i in range(per_class):
                for name, kind in standin.columns.items():
                    if kind == "image":
                        value = pool[counter % len(pool)]
                    elif kind == "classlabel":
                        value = c
                    elif kind == "string_label":
                        value = standin.labels[c]
                    elif isinstance(kind, tuple):
                        value = c % len(kind[1])
                    elif kind == "flags":
                        value = [int(j == c and i % 3 != 2) for j in range(len(standin.labels))]
                    elif kind == "bool":
                        value = standin.labels[c][0].islower()
                    else:
                        value = f"{split}/{standin.labels[c]}/{i}.jpg"
                    rows[name].append(value)
                counter += 1
        ds = datasets.Dataset.from_dict(rows, features=features)
        if rename:
            ds = ds.rename_columns(rename)
        splits[split] = ds
    return write_parquet_repo(root, splits)
