"""Turning trained encoders into Task Library .tflite files: conversion, metadata, quantization."""
