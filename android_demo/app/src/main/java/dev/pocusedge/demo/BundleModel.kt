package dev.pocusedge.demo

import android.content.Context
import android.graphics.Bitmap
import dev.pocusedge.core.Json
import dev.pocusedge.core.Manifest
import dev.pocusedge.core.Postprocess
import dev.pocusedge.core.Preprocess
import dev.pocusedge.core.SelfTest
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.MappedByteBuffer
import java.nio.channels.FileChannel
import org.tensorflow.lite.Interpreter
import org.tensorflow.lite.gpu.GpuDelegate

/** Where inference runs: XNNPACK on the CPU (with a thread count), the GPU delegate, or NNAPI. */
enum class Delegate { CPU, GPU, NNAPI }

/**
 * The bundle in assets/bundle (manifest.json + model.tflite + reference/), run with the core's pre/post-processing
 * only. At first load per delegate and thread count the bundle's self-test runs (SelfTest in the core: the reference
 * vectors through this interpreter); [run] refuses to infer unless it passed.
 */
class BundleModel(context: Context, val delegate: Delegate, val threads: Int) : AutoCloseable {
    val manifest: Manifest
    val selfTest: SelfTest.Report
    private val interpreter: Interpreter
    private var gpu: GpuDelegate? = null

    init {
        val assets = context.assets
        val schema = Json.parse(assets.open("bundle/manifest.schema.json").bufferedReader().readText())
        @Suppress("UNCHECKED_CAST")
        manifest = Manifest.parse(assets.open("bundle/manifest.json").bufferedReader().readText(), schema as Map<String, Any>)
        require(manifest.target == "tflite") { "this app runs tflite bundles; got ${manifest.target}" }
        val options = Interpreter.Options()
        when (delegate) {
            Delegate.CPU -> options.setNumThreads(threads)
            Delegate.GPU -> GpuDelegate().also { gpu = it; options.addDelegate(it) }
            Delegate.NNAPI -> options.setUseNNAPI(true)
        }
        interpreter = Interpreter(mapModel(context), options)
        selfTest = synchronized(verified) {
            verified.getOrPut("$delegate/$threads") {
                SelfTest.check({ path -> assets.open("bundle/$path").use { it.readBytes() } }, { input -> infer(input) })
            }
        }
    }

    private fun mapModel(context: Context): MappedByteBuffer {
        val fd = context.assets.openFd("bundle/${manifest.modelFile}")
        FileInputStream(fd.fileDescriptor).channel.use { channel ->
            return channel.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
        }
    }

    /** Bitmap -> gray frame in [0, 1] by the same BT.601 rule as the Python runtime. */
    fun gray(bitmap: Bitmap): Preprocess.Gray {
        val pixels = IntArray(bitmap.width * bitmap.height)
        bitmap.getPixels(pixels, 0, bitmap.width, 0, 0, bitmap.width, bitmap.height)
        return Preprocess.fromArgb(pixels, bitmap.height, bitmap.width)
    }

    /** Pre-processed input buffer for one frame (float32, or int8 with the manifest's scale/zero-point). */
    fun input(g: Preprocess.Gray): ByteBuffer {
        val x = Preprocess.normalized(g, manifest)
        return if (manifest.integerInput()) {
            val q = Preprocess.quantize(x, manifest.inputScale!!, manifest.inputZeroPoint, manifest.inputDtype == "uint8")
            ByteBuffer.allocateDirect(q.size).order(ByteOrder.nativeOrder()).put(q).also { it.rewind() }
        } else {
            ByteBuffer.allocateDirect(4 * x.size).order(ByteOrder.nativeOrder()).also { b ->
                b.asFloatBuffer().put(x); b.rewind()
            }
        }
    }

    /** The bare interpreter call (what the benchmark times); throws IllegalStateException when the self-test failed. */
    fun run(input: ByteBuffer): FloatArray {
        selfTest.requirePassed()
        return infer(input)
    }

    private fun infer(input: ByteBuffer): FloatArray {
        val out = interpreter.getOutputTensor(0)
        val buffer = ByteBuffer.allocateDirect(out.numBytes()).order(ByteOrder.nativeOrder())
        interpreter.run(input, buffer)
        buffer.rewind()
        return if (manifest.integerOutput()) {
            val q = ByteArray(out.numElements()).also { buffer.get(it) }
            Postprocess.dequantize(q, manifest.outputScale!!, manifest.outputZeroPoint, manifest.outputDtype == "uint8")
        } else {
            FloatArray(out.numElements()).also { buffer.asFloatBuffer().get(it) }
        }
    }

    fun outputChannels(): Int {
        val shape = interpreter.getOutputTensor(0).shape()
        return if (shape.size == 4) (if (manifest.outputLayout == "NHWC") shape[3] else shape[1]) else shape.last()
    }

    override fun close() {
        interpreter.close()
        gpu?.close()
    }

    companion object {
        /** Self-test results of this process, by delegate and thread count (the test runs once for each). */
        private val verified = HashMap<String, SelfTest.Report>()
    }
}
