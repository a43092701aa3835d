"""Rebuild samples/ from redistributable sources (run once; the outputs are committed).

Sources: the PyPI wheel scikit-image==0.26.0, files skimage/data/astronaut.png (NASA,
public domain), camera.png (CC0, photographer Lav Varshney) and coffee.png (CC0, Rachel
Michetti), per the skimage.data docstrings. The speech clip is synthesised with espeak-ng.

    pip download --no-deps scikit-image==0.26.0 -d /tmp/sk
    unzip -o /tmp/sk/scikit_image-0.26.0-*.whl 'skimage/data/*' -d /tmp/sk
    python samples/make_samples.py /tmp/sk/skimage/data
"""

import subprocess
import sys
from pathlib import Path

from PIL import Image, ImageEnhance, ImageFilter

OUT = Path(__file__).resolve().parent


def main(data: Path) -> None:
    astro = Image.open(data / "astronaut.png").convert("RGB")
    astro.save(OUT / "astronaut.png")
    # stored turned a quarter, displayed upright through EXIF Orientation 6
    exif = Image.Exif()
    exif[0x0112] = 6
    astro.transpose(Image.Transpose.ROTATE_90).save(OUT / "astronaut_exif6.jpg", quality=90, exif=exif)
    astro.filter(ImageFilter.GaussianBlur(6)).save(OUT / "astronaut_blurred.jpg", quality=90)
    ImageEnhance.Brightness(astro).enhance(0.1).save(OUT / "astronaut_dark.jpg", quality=90)
    pair = Image.new("RGB", (1024, 512))
    pair.paste(astro, (0, 0))
    pair.paste(astro.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (512, 0))
    pair.save(OUT / "astronaut_pair.jpg", quality=90)
    astro.resize((300, 300), Image.Resampling.LANCZOS).save(OUT / "astronaut_small.jpg", quality=90)
    Image.open(data / "camera.png").save(OUT / "cameraman.png")
    Image.open(data / "coffee.png").convert("RGB").save(OUT / "coffee.jpg", quality=90)
    text = ("Hello! This short clip was made on this machine with espeak, "
            "to try the submission commands of emo prep.")
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(OUT / "speech.wav"), text], check=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
