"""COCO AP / AP50 / AP75 / APs / APm / APl (and tiny-object ranges) for YOLO-format datasets."""
