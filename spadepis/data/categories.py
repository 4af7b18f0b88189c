"""Class names of the official SPADE datasets, one per one-hot label channel (index = channel = label id).

* COCO-Stuff (``coco``, 182 labels + dontcare): label id = COCO-Stuff id - 1, so channel 0 is ``person`` and
  channel 181 is ``wood``; the thing ids COCO 2017 leaves unused (``street sign``, ``hat``, ...) keep their
  names; channel 182 is the dontcare slot the value 255 (``unlabeled``) maps to.
* ADE20K (``ade20k``, 150 labels + dontcare): the raw annotation value is the channel (see
  ``ALGORITHMS.md`` 1.4), so channel 0 is ``other`` (unlabelled) and channels 1..150 are the 150 classes of
  the scene-parsing benchmark; channel 150 (``flag``) is also the dontcare slot, which ADE20K maps never use.
* Cityscapes (``cityscapes``, 35 labels, no dontcare): the ``*_labelIds.png`` ids 0..33 and, as channel
  34, ``license plate`` (id -1 in the Cityscapes label table).
"""

from __future__ import annotations

__all__ = ["COCO_STUFF", "ADE20K", "CITYSCAPES"]


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


COCO_STUFF = _names("""
    person, bicycle, car, motorcycle, airplane, bus, train, truck, boat, traffic light, fire hydrant, street sign,
    stop sign, parking meter, bench, bird, cat, dog, horse, sheep, cow, elephant, bear, zebra, giraffe, hat, backpack,
    umbrella, shoe, eye glasses, handbag, tie, suitcase, frisbee, skis, snowboard, sports ball, kite, baseball bat,
    baseball glove, skateboard, surfboard, tennis racket, bottle, plate, wine glass, cup, fork, knife, spoon, bowl,
    banana, apple, sandwich, orange, broccoli, carrot, hot dog, pizza, donut, cake, chair, couch, potted plant, bed,
    mirror, dining table, window, desk, toilet, door, tv, laptop, mouse, remote, keyboard, cell phone, microwave,
    oven, toaster, sink, refrigerator, blender, book, clock, vase, scissors, teddy bear, hair drier, toothbrush,
    hair brush,
    banner, blanket, branch, bridge, building-other, bush, cabinet, cage, cardboard, carpet, ceiling-other,
    ceiling-tile, cloth, clothes, clouds, counter, cupboard, curtain, desk-stuff, dirt, door-stuff, fence,
    floor-marble, floor-other, floor-stone, floor-tile, floor-wood, flower, fog, food-other, fruit, furniture-other,
    grass, gravel, ground-other, hill, house, leaves, light, mat, metal, mirror-stuff, moss, mountain, mud, napkin,
    net, paper, pavement, pillow, plant-other, plastic, platform, playingfield, railing, railroad, river, road, rock,
    roof, rug, salad, sand, sea, shelf, sky-other, skyscraper, snow, solid-other, stairs, stone, straw,
    structural-other, table, tent, textile-other, towel, tree, vegetable, wall-brick, wall-concrete, wall-other,
    wall-panel, wall-stone, wall-tile, wall-wood, water-other, waterdrops, window-blind, window-other, wood,
    unlabeled
""")
"""183 names: the 91 thing and 91 stuff classes of COCO-Stuff (ids 1..182 as channels 0..181), then dontcare."""

ADE20K = _names("""
    other,
    wall, building, sky, floor, tree, ceiling, road, bed, windowpane, grass, cabinet, sidewalk, person, earth, door,
    table, mountain, plant, curtain, chair, car, water, painting, sofa, shelf, house, sea, mirror, rug, field,
    armchair, seat, fence, desk, rock, wardrobe, lamp, bathtub, railing, cushion, base, box, column, signboard,
    chest of drawers, counter, sand, sink, skyscraper, fireplace, refrigerator, grandstand, path, stairs, runway,
    case, pool table, pillow, screen door, stairway, river, bridge, bookcase, blind, coffee table, toilet, flower,
    book, hill, bench, countertop, stove, palm, kitchen island, computer, swivel chair, boat, bar, arcade machine,
    hovel, bus, towel, light, truck, tower, chandelier, awning, streetlight, booth, television receiver, airplane,
    dirt track, apparel, pole, land, bannister, escalator, ottoman, bottle, buffet, poster, stage, van, ship,
    fountain, conveyer belt, canopy, washer, plaything, swimming pool, stool, barrel, basket, waterfall, tent, bag,
    minibike, cradle, oven, ball, food, step, tank, trade name, microwave, pot, animal, bicycle, lake, dishwasher,
    screen, blanket, sculpture, hood, sconce, vase, traffic light, tray, ashcan, fan, pier, crt screen, plate,
    monitor, bulletin board, shower, radiator, glass, clock, flag
""")
"""151 names: ``other`` (value 0), then the 150 scene-parsing classes (values 1..150)."""

CITYSCAPES = _names("""
    unlabeled, ego vehicle, rectification border, out of roi, static, dynamic, ground, road, sidewalk, parking,
    rail track, building, wall, fence, guard rail, bridge, tunnel, pole, polegroup, traffic light, traffic sign,
    vegetation, terrain, sky, person, rider, car, truck, bus, caravan, trailer, train, motorcycle, bicycle,
    license plate
""")
"""35 names: Cityscapes label ids 0..33, then ``license plate``."""
