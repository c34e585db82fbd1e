package dev.pocusedge.demo

import android.content.Intent
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.graphics.Color
import android.os.Bundle
import android.os.SystemClock
import android.widget.ArrayAdapter
import android.widget.Button
import android.widget.EditText
import android.widget.ImageView
import android.widget.Spinner
import android.widget.TextView
import androidx.activity.result.contract.ActivityResultContracts
import androidx.appcompat.app.AppCompatActivity
import dev.pocusedge.core.Postprocess

/** Pick an image (gallery or bundled sample), run the bundle, draw the mask / show classes or the embedding. */
class MainActivity : AppCompatActivity() {
    private lateinit var image: ImageView
    private lateinit var result: TextView
    private lateinit var delegate: Spinner
    private lateinit var threads: EditText

    private val pick = registerForActivityResult(ActivityResultContracts.GetContent()) { uri ->
        uri?.let { contentResolver.openInputStream(it)?.use { s -> show(BitmapFactory.decodeStream(s)) } }
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        image = findViewById(R.id.image)
        result = findViewById(R.id.result)
        delegate = findViewById(R.id.delegate)
        threads = findViewById(R.id.threads)
        delegate.adapter = ArrayAdapter(this, android.R.layout.simple_spinner_dropdown_item, Delegate.values())
        findViewById<Button>(R.id.pick).setOnClickListener { pick.launch("image/*") }
        findViewById<Button>(R.id.sample).setOnClickListener {
            assets.open("sample.png").use { show(BitmapFactory.decodeStream(it)) }
        }
        findViewById<Button>(R.id.bench).setOnClickListener {
            startActivity(Intent(this, BenchmarkActivity::class.java)
                .putExtra("delegate", (delegate.selectedItem as Delegate).name)
                .putExtra("threads", threads.text.toString().toIntOrNull() ?: 4))
        }
    }

    private fun show(bitmap: Bitmap) {
        BundleModel(this, delegate.selectedItem as Delegate, threads.text.toString().toIntOrNull() ?: 4).use { model ->
            if (!model.selfTest.passed()) {  // a failed self-test blocks inference: show why, draw nothing
                image.setImageBitmap(bitmap)
                result.text = model.selfTest.summary()
                return
            }
            val gray = model.gray(bitmap)
            val start = SystemClock.elapsedRealtimeNanos()
            val output = model.run(model.input(gray))
            val m = model.manifest
            val text = StringBuilder()
            when (m.task) {
                "segmentation" -> {
                    val k = model.outputChannels()
                    val chw = Postprocess.channelsFirst(output, k, m.height, m.width, m.outputLayout)
                    val seg = Postprocess.segment(chw, k, m, gray.height, gray.width)
                    image.setImageBitmap(overlay(bitmap, seg.mask))
                    text.append("foreground ${"%.1f".format(100.0 * seg.mask.count { it > 0 } / seg.mask.size)} %")
                }
                "classification" -> {
                    image.setImageBitmap(bitmap)
                    Postprocess.classify(output, m).forEachIndexed { i, p ->
                        text.append("${m.labels[i]}: ${"%.3f".format(p)}\n")
                    }
                }
                else -> {
                    image.setImageBitmap(bitmap)
                    val v = Postprocess.embed(output)
                    text.append("embedding dim ${v.size}, norm of raw ${"%.3f".format(Math.sqrt(output.sumOf { (it * it).toDouble() }))}, ")
                    text.append("first: ${v.take(5).joinToString { "%.4f".format(it) }}")
                }
            }
            val ms = (SystemClock.elapsedRealtimeNanos() - start) / 1e6
            result.text = "${m.name} (${m.precision}, ${model.delegate}): ${"%.1f".format(ms)} ms\n$text\n${model.selfTest.summary()}"
        }
    }

    private fun overlay(bitmap: Bitmap, mask: ByteArray): Bitmap {
        val out = bitmap.copy(Bitmap.Config.ARGB_8888, true)
        val px = IntArray(out.width * out.height)
        out.getPixels(px, 0, out.width, 0, 0, out.width, out.height)
        for (i in px.indices) if (mask[i] > 0) {
            val c = px[i]
            px[i] = Color.rgb((Color.red(c) * 0.55 + 255 * 0.45).toInt(), (Color.green(c) * 0.55 + 64 * 0.45).toInt(),
                (Color.blue(c) * 0.55 + 64 * 0.45).toInt())
        }
        out.setPixels(px, 0, out.width, 0, 0, out.width, out.height)
        return out
    }
}
